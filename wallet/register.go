package wallet

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/setpay/setpay/ca"
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
	maxLabelSize = 128
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
	sealedCard, err := SealCard(id.Card, opts.Passphrase)
	if err != nil {
		return nil, err
	}
	files[FileCard] = sealedCard
	files[FileCert] = pki.EncodePEM(res.Cert)
	files[FileChain] = pki.EncodePEM(res.Chain...)
	files[FileRoot] = pki.EncodePEM(c.Root())
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("wallet: %w", err)
	}
	// The certificate goes last: its presence marks a complete wallet.
	for _, name := range []string{FileKey, FileKeyLabel, FileCard, FileChain, FileRoot, FileCert} {
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

// LoadIdentity reads a wallet directory made by Register. The passphrase
// opens the card file and a sealed key; find is needed for a token wallet.
// The certificate must carry the key's public key and be bound to the card.
func LoadIdentity(ctx context.Context, dir string, passphrase []byte, find KeyFinder) (*Identity, error) {
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
	var key crypto.Signer
	if sealed, err := read(FileKey); err == nil {
		if key, err = OpenPrivateKey(sealed, passphrase); err != nil {
			return nil, err
		}
	} else {
		label, err := read(FileKeyLabel)
		if err != nil {
			return nil, errors.New("wallet: neither a sealed key nor a token key label")
		}
		if find == nil {
			return nil, errors.New("wallet: the key is in a token; give the token")
		}
		if key, err = find(ctx, strings.TrimSpace(string(label))); err != nil {
			return nil, fmt.Errorf("wallet: token key: %w", err)
		}
	}
	k, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !k.Equal(key.Public()) {
		return nil, errors.New("wallet: certificate does not match the key")
	}
	sealedCard, err := read(FileCard)
	if err != nil {
		return nil, err
	}
	card, err := OpenCard(sealedCard, passphrase)
	if err != nil {
		return nil, err
	}
	if err := pki.CheckCardholderPAN(certs[0], card.PAN, card.Expiry, card.PANSecret); err != nil {
		return nil, fmt.Errorf("wallet: certificate not bound to the stored card: %w", err)
	}
	return &Identity{Key: key, Cert: certs[0], Chain: chain, Card: card}, nil
}
