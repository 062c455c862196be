package ca_test

import (
	"context"
	"crypto"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/wallet"
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
