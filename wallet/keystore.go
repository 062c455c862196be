package wallet

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/crypto/scrypt"
)

// Sealed files keep the wallet's secrets at rest: the PKCS#8 signature key
// (when it is not in a token) and the card with its PANSecret. Format, one
// JSON object:
//
//	{"format":"setpay-sealed/v1","content":"pkcs8"|"card","kdf":"scrypt",
//	 "n":32768,"r":8,"p":1,"salt":"<16 bytes>","nonce":"<12 bytes>","ciphertext":"<...>"}
//
// (byte fields base64, standard encoding). key = scrypt(passphrase, salt, n, r, p, 32);
// ciphertext = AES-256-GCM(key, nonce, plaintext, aad) with
// aad = "setpay-sealed/v1\0" ‖ content ‖ "\0" ‖ "scrypt n r p" — so neither
// the content kind nor the KDF cost can be changed without failing the tag.
// scrypt at N=2^15, r=8 costs ~32 MiB and ~0.1 s per guess.
const (
	SealFormat = "setpay-sealed/v1"
	// MaxSealedSize bounds a sealed file read from disk.
	MaxSealedSize = 64 << 10
	// MinPassphraseLen is the shortest accepted passphrase.
	MinPassphraseLen = 8

	scryptN, scryptR, scryptP = 1 << 15, 8, 1
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
	Format     string `json:"format"`
	Content    string `json:"content"`
	KDF        string `json:"kdf"`
	N          int    `json:"n"`
	R          int    `json:"r"`
	P          int    `json:"p"`
	Salt       []byte `json:"salt"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

func (s *sealedFile) aad() []byte {
	return []byte(SealFormat + "\x00" + s.Content + "\x00scrypt " + strconv.Itoa(s.N) + " " + strconv.Itoa(s.R) + " " + strconv.Itoa(s.P))
}

func (s *sealedFile) aead(passphrase []byte) (cipher.AEAD, error) {
	key, err := scrypt.Key(passphrase, s.Salt, s.N, s.R, s.P, 32)
	if err != nil {
		return nil, fmt.Errorf("wallet: scrypt: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plaintext of the given content kind under passphrase.
func Seal(content string, plaintext, passphrase []byte) ([]byte, error) {
	if len(passphrase) < MinPassphraseLen {
		return nil, fmt.Errorf("wallet: passphrase shorter than %d bytes", MinPassphraseLen)
	}
	if content != ContentPKCS8 && content != ContentCard {
		return nil, fmt.Errorf("wallet: unknown sealed content %q", content)
	}
	s := &sealedFile{Format: SealFormat, Content: content, KDF: "scrypt", N: scryptN, R: scryptR, P: scryptP,
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
	if len(sealed) == 0 || len(sealed) > MaxSealedSize {
		return nil, fmt.Errorf("wallet: sealed file of %d bytes, want 1..%d", len(sealed), MaxSealedSize)
	}
	var s sealedFile
	if err := json.Unmarshal(sealed, &s); err != nil {
		return nil, fmt.Errorf("wallet: sealed file: %w", err)
	}
	switch {
	case s.Format != SealFormat:
		return nil, fmt.Errorf("wallet: sealed file format %q, want %q", s.Format, SealFormat)
	case s.Content != content:
		return nil, fmt.Errorf("wallet: sealed file holds %q, want %q", s.Content, content)
	case s.KDF != "scrypt":
		return nil, fmt.Errorf("wallet: sealed file KDF %q not supported", s.KDF)
	case s.N < 1<<14 || s.N > 1<<20 || s.N&(s.N-1) != 0, s.R < 1 || s.R > 16, s.P < 1 || s.P > 4:
		return nil, errors.New("wallet: sealed file KDF parameters out of range")
	case len(s.Salt) < 16 || len(s.Salt) > 64, len(s.Nonce) != 12, len(s.Ciphertext) < 16:
		return nil, errors.New("wallet: sealed file fields malformed")
	}
	if len(passphrase) == 0 {
		return nil, ErrWrongPassphrase
	}
	g, err := s.aead(passphrase)
	if err != nil {
		return nil, err
	}
	pt, err := g.Open(nil, s.Nonce, s.Ciphertext, s.aad())
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	return pt, nil
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
	der, err := Open(ContentPKCS8, sealed, passphrase)
	if err != nil {
		return nil, err
	}
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

// sealedCard is the plaintext of a sealed card file.
type sealedCard struct {
	PAN       string `json:"pan"`
	Expiry    string `json:"expiry"`
	PANSecret []byte `json:"pan_secret"`
}

// SealCard seals the card and its PANSecret.
func SealCard(c Card, passphrase []byte) ([]byte, error) {
	b, err := json.Marshal(sealedCard{PAN: c.PAN, Expiry: c.Expiry, PANSecret: c.PANSecret})
	if err != nil {
		return nil, err
	}
	return Seal(ContentCard, b, passphrase)
}

// OpenCard opens a sealed card file.
func OpenCard(sealed, passphrase []byte) (Card, error) {
	b, err := Open(ContentCard, sealed, passphrase)
	if err != nil {
		return Card{}, err
	}
	var c sealedCard
	if err := json.Unmarshal(b, &c); err != nil {
		return Card{}, fmt.Errorf("wallet: card: %w", err)
	}
	return Card{PAN: c.PAN, Expiry: c.Expiry, PANSecret: c.PANSecret}, nil
}
