package wallet

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/scrypt"
)

// Sealed files keep the wallet's secrets at rest: the PKCS#8 signature key
// (when it is not in a token) and the card with its PANSecret and the
// fingerprint of the wallet's trusted root. Format, one JSON object:
//
//	{"format":"setpay-sealed/v2","content":"pkcs8"|"card","kdf":"argon2id",
//	 "t":3,"m":65536,"p":4,"salt":"<16 bytes>","nonce":"<12 bytes>","ciphertext":"<...>"}
//
// (byte fields base64, standard encoding). key = Argon2id(passphrase, salt,
// t passes, m KiB, p lanes, 32 bytes) — RFC 9106 §4's second recommended
// option; ciphertext = AES-256-GCM(key, nonce, plaintext, aad) with
// aad = "setpay-sealed/v2\0" ‖ content ‖ "\0argon2id t m p" — so neither the
// content kind nor the KDF cost can be changed without failing the tag.
//
// Version 1 files (scrypt N=2^15, r=8, p=1 and an 8-byte minimum passphrase)
// still open; LoadIdentity re-seals them as version 2 on first use. The KDF
// parameters of a file are bounded before any work (at most 256 MiB for
// Argon2id, 128 MiB for scrypt), so a hostile file cannot make the wallet
// allocate gigabytes.
const (
	SealFormat = "setpay-sealed/v2"
	// MaxSealedSize bounds a sealed file read from disk.
	MaxSealedSize = 64 << 10
	// MinPassphraseLen is the shortest passphrase accepted for a new seal.
	MinPassphraseLen = 12

	sealFormatV1 = "setpay-sealed/v1"

	argonTime, argonMemory, argonLanes = 3, 64 << 10, 4 // RFC 9106 §4, second option: t=3, 64 MiB, p=4

	// Bounds on the parameters read from a file.
	maxArgonTime, minArgonMemory, maxArgonMemory, maxArgonLanes = 8, 19 << 10, 256 << 10, 16
	maxScryptMemory                                             = 128 << 20
)

// Sealed-content kinds.
const (
	ContentPKCS8 = "pkcs8"
	ContentCard  = "card"
)

// ErrWrongPassphrase is returned when a sealed file does not open: the
// passphrase is wrong or the file was altered (GCM cannot tell which).
var ErrWrongPassphrase = errors.New("wallet: wrong passphrase or altered file")

type sealedFile struct {
	Format  string `json:"format"`
	Content string `json:"content"`
	KDF     string `json:"kdf"`
	// scrypt (version 1)
	N int `json:"n,omitempty"`
	R int `json:"r,omitempty"`
	// argon2id (version 2)
	T int `json:"t,omitempty"`
	M int `json:"m,omitempty"`
	// P is scrypt's parallelism or Argon2id's lanes.
	P          int    `json:"p"`
	Salt       []byte `json:"salt"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

func (s *sealedFile) aad() []byte {
	if s.Format == sealFormatV1 {
		return []byte(sealFormatV1 + "\x00" + s.Content + "\x00scrypt " + strconv.Itoa(s.N) + " " + strconv.Itoa(s.R) + " " + strconv.Itoa(s.P))
	}
	return []byte(SealFormat + "\x00" + s.Content + "\x00argon2id " + strconv.Itoa(s.T) + " " + strconv.Itoa(s.M) + " " + strconv.Itoa(s.P))
}

// checkParams bounds the format and KDF parameters of an untrusted file.
func (s *sealedFile) checkParams() error {
	switch {
	case s.Format == SealFormat && s.KDF == "argon2id":
		if s.T < 1 || s.T > maxArgonTime || s.M < minArgonMemory || s.M > maxArgonMemory || s.P < 1 || s.P > maxArgonLanes {
			return fmt.Errorf("wallet: sealed file Argon2id parameters t=%d m=%d p=%d out of range (t 1..%d, m %d..%d KiB, p 1..%d)",
				s.T, s.M, s.P, maxArgonTime, minArgonMemory, maxArgonMemory, maxArgonLanes)
		}
	case s.Format == sealFormatV1 && s.KDF == "scrypt":
		if s.N < 1<<14 || s.N&(s.N-1) != 0 || s.R < 1 || s.R > 16 || s.P < 1 || s.P > 4 || s.N > maxScryptMemory/(128*s.R) {
			return fmt.Errorf("wallet: sealed file scrypt parameters N=%d r=%d p=%d out of range (at most %d MiB)", s.N, s.R, s.P, maxScryptMemory>>20)
		}
	case s.Format != SealFormat && s.Format != sealFormatV1:
		return fmt.Errorf("wallet: sealed file format %q, want %q", s.Format, SealFormat)
	default:
		return fmt.Errorf("wallet: sealed file KDF %q not supported in %s", s.KDF, s.Format)
	}
	return nil
}

func (s *sealedFile) aead(passphrase []byte) (cipher.AEAD, error) {
	var key []byte
	if s.KDF == "scrypt" {
		var err error
		if key, err = scrypt.Key(passphrase, s.Salt, s.N, s.R, s.P, 32); err != nil {
			return nil, fmt.Errorf("wallet: scrypt: %w", err)
		}
	} else {
		key = argon2.IDKey(passphrase, s.Salt, uint32(s.T), uint32(s.M), uint8(s.P), 32)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plaintext of the given content kind under passphrase, with
// the current format (version 2, Argon2id).
func Seal(content string, plaintext, passphrase []byte) ([]byte, error) {
	if len(passphrase) < MinPassphraseLen {
		return nil, fmt.Errorf("wallet: passphrase shorter than %d bytes", MinPassphraseLen)
	}
	return seal(content, plaintext, passphrase)
}

// seal is Seal without the passphrase length rule: re-sealing an old file
// under the passphrase it already has.
func seal(content string, plaintext, passphrase []byte) ([]byte, error) {
	if content != ContentPKCS8 && content != ContentCard {
		return nil, fmt.Errorf("wallet: unknown sealed content %q", content)
	}
	if len(passphrase) == 0 {
		return nil, errors.New("wallet: empty passphrase")
	}
	s := &sealedFile{Format: SealFormat, Content: content, KDF: "argon2id", T: argonTime, M: argonMemory, P: argonLanes,
		Salt: make([]byte, 16), Nonce: make([]byte, 12)}
	if _, err := rand.Read(s.Salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(s.Nonce); err != nil {
		return nil, err
	}
	g, err := s.aead(passphrase)
	if err != nil {
		return nil, err
	}
	s.Ciphertext = g.Seal(nil, s.Nonce, plaintext, s.aad())
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// Open decrypts a sealed file of the expected content kind. The file is
// untrusted input: size, format and KDF cost are bounded before any work.
func Open(content string, sealed, passphrase []byte) ([]byte, error) {
	pt, _, err := open(content, sealed, passphrase)
	return pt, err
}

// open is Open that also reports whether the file is in an older format and
// should be re-sealed.
func open(content string, sealed, passphrase []byte) (pt []byte, stale bool, err error) {
	if len(sealed) == 0 || len(sealed) > MaxSealedSize {
		return nil, false, fmt.Errorf("wallet: sealed file of %d bytes, want 1..%d", len(sealed), MaxSealedSize)
	}
	var s sealedFile
	if err := json.Unmarshal(sealed, &s); err != nil {
		return nil, false, fmt.Errorf("wallet: sealed file: %w", err)
	}
	if err := s.checkParams(); err != nil {
		return nil, false, err
	}
	switch {
	case s.Content != content:
		return nil, false, fmt.Errorf("wallet: sealed file holds %q, want %q", s.Content, content)
	case len(s.Salt) < 16 || len(s.Salt) > 64, len(s.Nonce) != 12, len(s.Ciphertext) < 16:
		return nil, false, errors.New("wallet: sealed file fields malformed")
	}
	if len(passphrase) == 0 {
		return nil, false, ErrWrongPassphrase
	}
	g, err := s.aead(passphrase)
	if err != nil {
		return nil, false, err
	}
	pt, err = g.Open(nil, s.Nonce, s.Ciphertext, s.aad())
	if err != nil {
		return nil, false, ErrWrongPassphrase
	}
	return pt, s.Format != SealFormat, nil
}

// SealPrivateKey seals key as PKCS#8.
func SealPrivateKey(key crypto.PrivateKey, passphrase []byte) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("wallet: PKCS#8: %w", err)
	}
	return Seal(ContentPKCS8, der, passphrase)
}

// OpenPrivateKey opens a sealed PKCS#8 key.
func OpenPrivateKey(sealed, passphrase []byte) (crypto.Signer, error) {
	k, _, err := openPrivateKey(sealed, passphrase)
	return k, err
}

func openPrivateKey(sealed, passphrase []byte) (crypto.Signer, []byte, error) {
	der, stale, err := open(ContentPKCS8, sealed, passphrase)
	if err != nil {
		return nil, nil, err
	}
	k, err := parsePKCS8Signer(der)
	if err != nil || !stale {
		return k, nil, err
	}
	return k, der, nil
}

func parsePKCS8Signer(der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("wallet: PKCS#8: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("wallet: sealed key cannot sign")
	}
	return s, nil
}

// sealedCard is the plaintext of a sealed card file. RootSHA256 binds the
// wallet's trusted root to the passphrase-authenticated part: root.pem beside
// it is only a copy (version-1 card files lack it; see Load).
type sealedCard struct {
	PAN        string `json:"pan"`
	Expiry     string `json:"expiry"`
	PANSecret  []byte `json:"pan_secret"`
	RootSHA256 []byte `json:"root_sha256,omitempty"`
}

// SealCard seals the card and its PANSecret, bound to the trusted root.
func SealCard(c Card, root *x509.Certificate, passphrase []byte) ([]byte, error) {
	if len(passphrase) < MinPassphraseLen {
		return nil, fmt.Errorf("wallet: passphrase shorter than %d bytes", MinPassphraseLen)
	}
	return sealCard(c, root, passphrase)
}

func sealCard(c Card, root *x509.Certificate, passphrase []byte) ([]byte, error) {
	if root == nil {
		return nil, errors.New("wallet: a card is sealed with its trusted root")
	}
	fp := sha256.Sum256(root.Raw)
	b, err := json.Marshal(sealedCard{PAN: c.PAN, Expiry: c.Expiry, PANSecret: c.PANSecret, RootSHA256: fp[:]})
	if err != nil {
		return nil, err
	}
	return seal(ContentCard, b, passphrase)
}

// OpenCard opens a sealed card file.
func OpenCard(sealed, passphrase []byte) (Card, error) {
	c, _, _, err := openCard(sealed, passphrase)
	return c, err
}

// openCard opens a sealed card file, returning the card, the SHA-256 of its
// trusted root (nil in a version-1 file) and whether the file is stale (an
// older format, or no root bound).
func openCard(sealed, passphrase []byte) (Card, []byte, bool, error) {
	b, stale, err := open(ContentCard, sealed, passphrase)
	if err != nil {
		return Card{}, nil, false, err
	}
	var c sealedCard
	if err := json.Unmarshal(b, &c); err != nil {
		return Card{}, nil, false, fmt.Errorf("wallet: card: %w", err)
	}
	if c.RootSHA256 != nil && len(c.RootSHA256) != sha256.Size {
		return Card{}, nil, false, errors.New("wallet: card: root fingerprint malformed")
	}
	return Card{PAN: c.PAN, Expiry: c.Expiry, PANSecret: c.PANSecret}, c.RootSHA256, stale || c.RootSHA256 == nil, nil
}
