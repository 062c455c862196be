package wallet_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/wallet"
)

var pass = []byte("correct horse battery staple")

func TestSealedKeyRoundTrip(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	sealed, err := wallet.SealPrivateKey(k, pass)
	require.NoError(t, err)
	assert.NotContains(t, string(sealed), "PRIVATE KEY")
	got, err := wallet.OpenPrivateKey(sealed, pass)
	require.NoError(t, err)
	assert.True(t, k.PublicKey.Equal(got.Public()))

	_, err = wallet.OpenPrivateKey(sealed, []byte("wrong passphrase"))
	assert.ErrorIs(t, err, wallet.ErrWrongPassphrase)
	// A sealed key cannot be opened as a card, nor the other way round.
	_, err = wallet.OpenCard(sealed, pass)
	assert.Error(t, err)
	_, err = wallet.SealPrivateKey(k, []byte("short"))
	assert.Error(t, err)
}

func TestSealedCardTamper(t *testing.T) {
	card := wallet.Card{PAN: "4111111111111111", Expiry: "203012", PANSecret: bytes.Repeat([]byte{7}, 32)}
	sealed, err := wallet.SealCard(card, pass)
	require.NoError(t, err)
	assert.NotContains(t, string(sealed), card.PAN)
	got, err := wallet.OpenCard(sealed, pass)
	require.NoError(t, err)
	assert.Equal(t, card, got)

	var m map[string]any
	require.NoError(t, json.Unmarshal(sealed, &m))
	for _, tc := range []struct {
		name  string
		field string
		value any
	}{
		{"cheaper KDF", "n", 16384},
		{"content kind", "content", "pkcs8"},
		{"huge KDF", "n", 1 << 30},
		{"format", "format", "v0"},
		{"short nonce", "nonce", "AAAA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := map[string]any{}
			for k, v := range m {
				c[k] = v
			}
			c[tc.field] = tc.value
			b, err := json.Marshal(c)
			require.NoError(t, err)
			_, err = wallet.OpenCard(b, pass)
			assert.Error(t, err)
		})
	}
}

func FuzzOpenSealed(f *testing.F) {
	sealed, err := wallet.SealCard(wallet.Card{PAN: "4111111111111111", Expiry: "203012", PANSecret: []byte("s")}, pass)
	require.NoError(f, err)
	f.Add(sealed)
	f.Add([]byte(`{"format":"setpay-sealed/v1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = wallet.Open(wallet.ContentCard, b, pass)
	})
}
