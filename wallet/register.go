package wallet

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/internal/secretfile"
	"github.com/setpay/setpay/pki"
)

// Files of a wallet directory.
const (
	FileCert     = "cert.pem"    // cardholder certificate
	FileChain    = "chain.pem"   // CCA, brand
	FileRoot     = "root.pem"    // the trusted root
	FileKey      = "key.sealed"  // sealed PKCS#8 key (software wallet)
	FileKeyLabel = "key.label"   // label of the key in a token (token wallet)
	FileCard     = "card.sealed" // sealed PAN, expiry and PANSecret
	// FileMaskedPAN holds the card number masked (pki.MaskPAN), all a wallet shows
	// of its cards before they are unlocked.
	FileMaskedPAN = "card.masked"
	maxLabelSize  = 128
)

// CardInput is the card the cardholder registers.
type CardInput struct {
	PAN    string
	Expiry string            // YYYYMM
	Fields map[string]string // registration form answers, e.g. postal_code
}

// RegisterOptions says where the wallet keeps its key and files.
type RegisterOptions struct {
	Dir        string
	Passphrase []byte // protects the card file and, without a token, the key
	// Key is a token key made by the caller; KeyLabel names it for LoadIdentity.
	// Nil Key: a new ECDSA P-256 key is generated and sealed in Dir.
	Key      crypto.Signer
	KeyLabel string
}

// Register obtains a cardholder certificate from the CA and stores the
// identity in opts.Dir (created 0700). It refuses to overwrite a wallet.
func Register(ctx context.Context, c *ca.Client, card CardInput, opts RegisterOptions) (*Identity, error) {
	if len(opts.Passphrase) < MinPassphraseLen {
		return nil, fmt.Errorf("wallet: passphrase shorter than %d bytes", MinPassphraseLen)
	}
	if _, err := os.Stat(filepath.Join(opts.Dir, FileCert)); err == nil {
		return nil, fmt.Errorf("wallet: %s already holds a registered card", opts.Dir)
	}
	files := map[string][]byte{}
	key := opts.Key
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		sealed, err := SealPrivateKey(k, opts.Passphrase)
		if err != nil {
			return nil, err
		}
		key, files[FileKey] = k, sealed
	} else {
		if opts.KeyLabel == "" || len(opts.KeyLabel) > maxLabelSize || strings.ContainsAny(opts.KeyLabel, "\n\r") {
			return nil, errors.New("wallet: a token key needs a one-line label")
		}
		files[FileKeyLabel] = []byte(opts.KeyLabel + "\n")
	}
	res, err := c.RegisterCardholder(ctx, ca.CardholderRegistration{PAN: card.PAN, Expiry: card.Expiry, Fields: card.Fields, Key: key})
	if err != nil {
		return nil, fmt.Errorf("wallet: register card %s: %w", pki.MaskPAN(card.PAN), err)
	}
	id := &Identity{Key: key, Cert: res.Cert, Chain: res.Chain, Card: Card{PAN: card.PAN, Expiry: card.Expiry, PANSecret: res.PANSecret}}
	id.Root = c.Root()
	sealedCard, err := SealCard(id.Card, id.Root, opts.Passphrase)
	if err != nil {
		return nil, err
	}
	files[FileCard] = sealedCard
	files[FileMaskedPAN] = []byte(pki.MaskPAN(card.PAN) + "\n")
	files[FileCert] = pki.EncodePEM(res.Cert)
	files[FileChain] = pki.EncodePEM(res.Chain...)
	files[FileRoot] = pki.EncodePEM(c.Root())
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("wallet: %w", err)
	}
	// The certificate goes last: its presence marks a complete wallet.
	for _, name := range []string{FileKey, FileKeyLabel, FileCard, FileMaskedPAN, FileChain, FileRoot, FileCert} {
		b, ok := files[name]
		if !ok {
			continue
		}
		if err := os.WriteFile(filepath.Join(opts.Dir, name), b, 0o600); err != nil {
			return nil, fmt.Errorf("wallet: %w", err)
		}
	}
	return id, nil
}

// KeyFinder finds a token key by label (e.g. a wrapper of hsm.Token.FindKey).
type KeyFinder func(ctx context.Context, label string) (crypto.Signer, error)

// ErrRootMismatch means the wallet's root.pem is not the root its sealed card
// file is bound to: someone replaced the trust anchor.
var ErrRootMismatch = errors.New("wallet: root.pem is not the trusted root this wallet is bound to")

// LoadOptions are LoadIdentity's optional parts.
type LoadOptions struct {
	// Find is needed for a token wallet.
	Find KeyFinder
	// Logger records migrations of old wallets (nil: slog.Default()).
	Logger *slog.Logger
}

// LoadIdentity reads a wallet directory made by Register; see Load.
func LoadIdentity(ctx context.Context, dir string, passphrase []byte, find KeyFinder) (*Identity, error) {
	return Load(ctx, dir, passphrase, LoadOptions{Find: find})
}

// Load reads a wallet directory made by Register. The passphrase opens the
// card file and a sealed key; opts.Find is needed for a token wallet. The
// certificate must carry the key's public key and be bound to the card, and
// root.pem must be the root whose fingerprint the sealed card file holds
// (ErrRootMismatch otherwise): the returned Identity.Root is the one trust
// anchor of the wallet.
//
// Migration: a wallet sealed before this check (format v1, scrypt, no root in
// the card file) is upgraded on its first Load with the passphrase: its
// sealed files are re-sealed with Argon2id, and the card file is bound to the
// root.pem the directory holds at that moment (trust on first use after the
// upgrade, logged at Warn with the root's fingerprint and subject so the
// cardholder can compare it with the CA's published one).
func Load(ctx context.Context, dir string, passphrase []byte, opts LoadOptions) (*Identity, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	read := func(name string) ([]byte, error) {
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("wallet: %w", err)
		}
		if st.Size() > MaxSealedSize {
			return nil, fmt.Errorf("wallet: %s too large", p)
		}
		return os.ReadFile(p)
	}
	readSealed := func(name string) ([]byte, error) {
		b, err := secretfile.Read(filepath.Join(dir, name), MaxSealedSize)
		if err != nil {
			return nil, fmt.Errorf("wallet: %w", err)
		}
		return b, nil
	}
	certPEM, err := read(FileCert)
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParsePEMCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("wallet: %s: %w", FileCert, err)
	}
	chainPEM, err := read(FileChain)
	if err != nil {
		return nil, err
	}
	chain, err := pki.ParsePEMCertificates(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("wallet: %s: %w", FileChain, err)
	}
	rootPEM, err := read(FileRoot)
	if err != nil {
		return nil, err
	}
	roots, err := pki.ParsePEMCertificates(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("wallet: %s: %w", FileRoot, err)
	}
	if len(roots) != 1 {
		return nil, fmt.Errorf("wallet: %s holds %d certificates, want the one root", FileRoot, len(roots))
	}
	root := roots[0]
	var key crypto.Signer
	var rekey []byte // PKCS#8 to re-seal, for an old-format key file
	if _, err := os.Stat(filepath.Join(dir, FileKey)); err == nil {
		sealed, err := readSealed(FileKey)
		if err != nil {
			return nil, err
		}
		if key, rekey, err = openPrivateKey(sealed, passphrase); err != nil {
			return nil, err
		}
	} else {
		label, err := read(FileKeyLabel)
		if err != nil {
			return nil, errors.New("wallet: neither a sealed key nor a token key label")
		}
		if opts.Find == nil {
			return nil, errors.New("wallet: the key is in a token; give the token")
		}
		if key, err = opts.Find(ctx, strings.TrimSpace(string(label))); err != nil {
			return nil, fmt.Errorf("wallet: token key: %w", err)
		}
	}
	k, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !k.Equal(key.Public()) {
		return nil, errors.New("wallet: certificate does not match the key")
	}
	sealedCard, err := readSealed(FileCard)
	if err != nil {
		return nil, err
	}
	card, boundRoot, stale, err := openCard(sealedCard, passphrase)
	if err != nil {
		return nil, err
	}
	fp := sha256.Sum256(root.Raw)
	if boundRoot != nil && subtle.ConstantTimeCompare(boundRoot, fp[:]) != 1 {
		return nil, fmt.Errorf("%w: %s has SHA-256 %x, the wallet was registered with %x", ErrRootMismatch, filepath.Join(dir, FileRoot), fp[:], boundRoot)
	}
	if err := pki.CheckCardholderPAN(certs[0], card.PAN, card.Expiry, card.PANSecret); err != nil {
		return nil, fmt.Errorf("wallet: certificate not bound to the stored card: %w", err)
	}
	id := &Identity{Key: key, Cert: certs[0], Chain: chain, Root: root, Card: card}
	// Wallets registered before card.masked existed get it on their first unlock.
	if _, err := os.Stat(filepath.Join(dir, FileMaskedPAN)); errors.Is(err, os.ErrNotExist) {
		if err := secretfile.Write(filepath.Join(dir, FileMaskedPAN), []byte(pki.MaskPAN(card.PAN)+"\n")); err != nil {
			log.WarnContext(ctx, "wallet: cannot write the masked card number", "wallet", dir, "err", err)
		}
	}
	if rekey != nil {
		b, err := seal(ContentPKCS8, rekey, passphrase)
		if err != nil {
			return nil, err
		}
		if err := secretfile.Write(filepath.Join(dir, FileKey), b); err != nil {
			return nil, fmt.Errorf("wallet: re-seal key: %w", err)
		}
		log.InfoContext(ctx, "wallet key file re-sealed with Argon2id", "wallet", dir)
	}
	if stale {
		b, err := sealCard(card, root, passphrase)
		if err != nil {
			return nil, err
		}
		if err := secretfile.Write(filepath.Join(dir, FileCard), b); err != nil {
			return nil, fmt.Errorf("wallet: re-seal card: %w", err)
		}
		if boundRoot == nil {
			log.WarnContext(ctx, "wallet upgraded: its trusted root is now bound to the sealed card file; compare the fingerprint with the CA's published root",
				"wallet", dir, "root_sha256", hex.EncodeToString(fp[:]), "root", root.Subject.String())
		} else {
			log.InfoContext(ctx, "wallet card file re-sealed with Argon2id", "wallet", dir)
		}
	}
	return id, nil
}

// MaskedPAN returns the masked card number of the wallet directory dir (its
// card.masked file), or "" when the wallet was registered before that file
// existed and has not been unlocked since. What the file holds is checked to be a
// masked number: at most the first six and last four digits, the rest '*'.
func MaskedPAN(dir string) (string, error) {
	p := filepath.Join(dir, FileMaskedPAN)
	st, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("wallet: %w", err)
	}
	if st.Size() > 64 {
		return "", fmt.Errorf("wallet: %s too large", p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("wallet: %w", err)
	}
	m := strings.TrimSpace(string(b))
	digits, stars := 0, 0
	for _, r := range m {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == '*':
			stars++
		default:
			return "", fmt.Errorf("wallet: %s is not a masked card number", p)
		}
	}
	if digits > 10 || stars == 0 || len(m) > 19 {
		return "", fmt.Errorf("wallet: %s is not a masked card number", p)
	}
	return m, nil
}
