package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/wallet"
	"github.com/setpay/setpay/wallet/wallettest"
)

// TestWalletRegisterAndLoad registers a card through the service into a
// wallet directory, with a sealed software key and with a token key, and
// loads the identity back for the purchase flow.
func TestWalletRegisterAndLoad(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	pass := []byte("correct horse battery staple")
	card := wallet.CardInput{PAN: cardOK, Expiry: cardExpiry, Fields: map[string]string{"postal_code": postalCode}}

	soft := filepath.Join(t.TempDir(), "w1")
	id, err := wallet.Register(ctx, e.client, card, wallet.RegisterOptions{Dir: soft, Passphrase: pass})
	require.NoError(t, err)
	loaded, err := wallet.LoadIdentity(ctx, soft, pass, nil)
	require.NoError(t, err)
	assert.Equal(t, id.Cert.Raw, loaded.Cert.Raw)
	assert.Equal(t, id.Card, loaded.Card)
	assert.NoError(t, pki.CheckCardholderPAN(loaded.Cert, cardOK, cardExpiry, loaded.Card.PANSecret))
	_, err = wallet.LoadIdentity(ctx, soft, []byte("wrong passphrase"), nil)
	assert.ErrorIs(t, err, wallet.ErrWrongPassphrase)
	_, err = wallet.Register(ctx, e.client, card, wallet.RegisterOptions{Dir: soft, Passphrase: pass})
	assert.Error(t, err, "an existing wallet is not overwritten")

	tokDir := filepath.Join(t.TempDir(), "w2")
	key := walletKey(t, e)
	_, err = wallet.Register(ctx, e.client, card, wallet.RegisterOptions{Dir: tokDir, Passphrase: pass, Key: key, KeyLabel: "wallet-key"})
	require.NoError(t, err)
	_, err = wallet.LoadIdentity(ctx, tokDir, pass, nil)
	assert.Error(t, err, "a token wallet needs the token")
	loaded, err = wallet.LoadIdentity(ctx, tokDir, pass, func(context.Context, string) (crypto.Signer, error) { return key, nil })
	require.NoError(t, err)
	assert.Equal(t, key.Public(), loaded.Key.Public())

	// Blocked cards register nothing.
	_, err = wallet.Register(ctx, e.client, wallet.CardInput{PAN: cardBlocked, Expiry: cardExpiry, Fields: card.Fields},
		wallet.RegisterOptions{Dir: filepath.Join(t.TempDir(), "w3"), Passphrase: pass})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), cardBlocked)
}

// Issue 12 finding 3: the wallet's trust anchor is bound to its sealed card
// file. A look-alike root (same subject, another key) in root.pem is refused,
// and Load's Identity.Root is the bound one.
func TestWalletRefusesLookAlikeRoot(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	pass := []byte("correct horse battery staple")
	dir := filepath.Join(t.TempDir(), "w")
	_, err := wallet.Register(ctx, e.client, wallet.CardInput{PAN: cardOK, Expiry: cardExpiry, Fields: map[string]string{"postal_code": postalCode}},
		wallet.RegisterOptions{Dir: dir, Passphrase: pass})
	require.NoError(t, err)
	id, err := wallet.LoadIdentity(ctx, dir, pass, nil)
	require.NoError(t, err)
	require.NotNil(t, id.Root)
	assert.Equal(t, e.client.Root().Raw, id.Root.Raw)

	realRoot, err := os.ReadFile(filepath.Join(dir, wallet.FileRoot))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, wallet.FileRoot), pki.EncodePEM(lookAlike(t, id.Root)), 0o600))
	_, err = wallet.LoadIdentity(ctx, dir, pass, nil)
	assert.ErrorIs(t, err, wallet.ErrRootMismatch)

	require.NoError(t, os.WriteFile(filepath.Join(dir, wallet.FileRoot), realRoot, 0o600))
	_, err = wallet.LoadIdentity(ctx, dir, pass, nil)
	assert.NoError(t, err)
}

// Issue 12 findings 3 and 9, migration: a wallet written before (format v1,
// scrypt, no root in the card file) opens with its passphrase, is re-sealed
// with Argon2id and bound to the root it holds (logged), and from then on a
// replaced root is refused.
func TestWalletMigratesV1(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	pass := []byte("8bytes!!") // v1 allowed 8-byte passphrases
	dir := filepath.Join(t.TempDir(), "w")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	res, err := e.client.RegisterCardholder(ctx, ca.CardholderRegistration{PAN: cardOK, Expiry: cardExpiry,
		Fields: map[string]string{"postal_code": postalCode}, Key: key})
	require.NoError(t, err)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	cardJSON, err := json.Marshal(map[string]any{"pan": cardOK, "expiry": cardExpiry, "pan_secret": res.PANSecret})
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o700))
	for name, b := range map[string][]byte{
		wallet.FileKey: wallettest.SealV1(t, wallet.ContentPKCS8, pkcs8, pass), wallet.FileCard: wallettest.SealV1(t, wallet.ContentCard, cardJSON, pass),
		wallet.FileCert: pki.EncodePEM(res.Cert), wallet.FileChain: pki.EncodePEM(res.Chain...), wallet.FileRoot: pki.EncodePEM(e.client.Root()),
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}

	var logs bytes.Buffer
	id, err := wallet.Load(ctx, dir, pass, wallet.LoadOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	assert.Equal(t, e.client.Root().Raw, id.Root.Raw)
	assert.Equal(t, cardOK, id.Card.PAN)
	fp := sha256.Sum256(e.client.Root().Raw)
	assert.Contains(t, logs.String(), "level=WARN")
	assert.Contains(t, logs.String(), hex.EncodeToString(fp[:]))
	assert.NotContains(t, logs.String(), cardOK)
	for _, name := range []string{wallet.FileKey, wallet.FileCard} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(b, &m))
		assert.Equal(t, "setpay-sealed/v2", m["format"], name)
		assert.Equal(t, "argon2id", m["kdf"], name)
		st, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), name)
	}
	logs.Reset()
	_, err = wallet.Load(ctx, dir, pass, wallet.LoadOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	assert.Empty(t, logs.String(), "migrated once")

	require.NoError(t, os.WriteFile(filepath.Join(dir, wallet.FileRoot), pki.EncodePEM(lookAlike(t, id.Root)), 0o600))
	_, err = wallet.Load(ctx, dir, pass, wallet.LoadOptions{})
	assert.ErrorIs(t, err, wallet.ErrRootMismatch)
}

// lookAlike is a self-signed root with the same subject and serial as root and
// another key.
func lookAlike(t *testing.T, root *x509.Certificate) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: root.SerialNumber, Subject: root.Subject, NotBefore: root.NotBefore, NotAfter: root.NotAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: root.KeyUsage, Policies: root.Policies}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}
