package wallet_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/wallet"
	"github.com/setpay/setpay/wallet/wallettest"
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
	sealed, err := wallet.SealCard(card, testRoot(t), pass)
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
		{"cheaper KDF", "m", 32768},
		{"fewer passes", "t", 2},
		{"content kind", "content", "pkcs8"},
		{"huge KDF", "m", 1 << 30},
		{"scrypt label on an Argon2id file", "kdf", "scrypt"},
		{"format", "format", "v0"},
		{"old format label", "format", "setpay-sealed/v1"},
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
	sealed, err := wallet.SealCard(wallet.Card{PAN: "4111111111111111", Expiry: "203012", PANSecret: []byte("s")}, testRoot(f), pass)
	require.NoError(f, err)
	f.Add(sealed)
	f.Add(wallettest.SealV1(f, wallet.ContentCard, []byte(`{"pan":"4111111111111111"}`), pass))
	f.Add([]byte(`{"format":"setpay-sealed/v1"}`))
	f.Add([]byte(`{"format":"setpay-sealed/v2","content":"card","kdf":"argon2id","t":3,"m":4194304,"p":4}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = wallet.Open(wallet.ContentCard, b, pass)
	})
}

// Finding 9: new seals use Argon2id with RFC 9106's parameters, stored in the
// file, and passphrases shorter than 12 bytes are refused.
func TestSealUsesArgon2id(t *testing.T) {
	sealed, err := wallet.Seal(wallet.ContentCard, []byte("x"), pass)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(sealed, &m))
	assert.Equal(t, "setpay-sealed/v2", m["format"])
	assert.Equal(t, "argon2id", m["kdf"])
	assert.GreaterOrEqual(t, m["t"], float64(3))
	assert.GreaterOrEqual(t, m["m"], float64(64<<10), "at least 64 MiB")
	assert.GreaterOrEqual(t, m["p"], float64(1))
	_, err = wallet.Seal(wallet.ContentCard, []byte("x"), []byte("elevenbytes"))
	assert.ErrorContains(t, err, "shorter than 12")
}

// Finding 9: KDF parameters are bounded before any work, so a hostile file
// cannot make the wallet allocate gigabytes; old (v1, scrypt) files still open.
func TestSealedKDFBoundedOnRead(t *testing.T) {
	base := map[string]any{"format": "setpay-sealed/v2", "content": "card", "kdf": "argon2id", "t": 3, "m": 65536, "p": 4,
		"salt": bytes.Repeat([]byte{1}, 16), "nonce": bytes.Repeat([]byte{2}, 12), "ciphertext": bytes.Repeat([]byte{3}, 32)}
	v1 := map[string]any{"format": "setpay-sealed/v1", "content": "card", "kdf": "scrypt", "n": 32768, "r": 8, "p": 1,
		"salt": bytes.Repeat([]byte{1}, 16), "nonce": bytes.Repeat([]byte{2}, 12), "ciphertext": bytes.Repeat([]byte{3}, 32)}
	for _, tc := range []struct {
		name string
		base map[string]any
		key  string
		val  any
	}{
		{"Argon2id 4 GiB", base, "m", 4 << 20},
		{"Argon2id 512 MiB", base, "m", 512 << 10},
		{"Argon2id 1000 passes", base, "t", 1000},
		{"Argon2id 255 lanes", base, "p", 255},
		{"Argon2id negative memory", base, "m", -1},
		{"Argon2id too little memory", base, "m", 1024},
		{"scrypt 1 GiB (N=2^20)", v1, "n", 1 << 20},
		{"scrypt 2 GiB (N=2^17, r=16)", v1, "r", 16},
		{"scrypt N not a power of two", v1, "n", 40000},
		{"scrypt p=64", v1, "p", 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := map[string]any{}
			for k, v := range tc.base {
				c[k] = v
			}
			c[tc.key] = tc.val
			if tc.name == "scrypt 2 GiB (N=2^17, r=16)" {
				c["n"] = 1 << 17
			}
			b, err := json.Marshal(c)
			require.NoError(t, err)
			_, err = wallet.Open(wallet.ContentCard, b, pass)
			assert.ErrorContains(t, err, "out of range")
		})
	}
	old := wallettest.SealV1(t, wallet.ContentCard, []byte("legacy"), []byte("8 bytes!"))
	got, err := wallet.Open(wallet.ContentCard, old, []byte("8 bytes!"))
	require.NoError(t, err, "a version-1 file opens with its (short) passphrase")
	assert.Equal(t, "legacy", string(got))
}

func testRoot(t testing.TB) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}

// BenchmarkOpenSealed reports the cost of one passphrase guess against the
// current format (Argon2id t=3, 64 MiB, p=4) and the old one (scrypt N=2^15).
func BenchmarkOpenSealed(b *testing.B) {
	v2, err := wallet.Seal(wallet.ContentCard, []byte("x"), pass)
	require.NoError(b, err)
	v1 := wallettest.SealV1(b, wallet.ContentCard, []byte("x"), pass)
	for _, tc := range []struct {
		name string
		f    []byte
	}{{"v2-argon2id", v2}, {"v1-scrypt", v1}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := wallet.Open(wallet.ContentCard, tc.f, pass); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
