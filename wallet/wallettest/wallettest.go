// Package wallettest holds what tests of wallets from before the current keystore
// format need: a writer of the old format that does not use the wallet package.
package wallettest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/scrypt"
)

// SealV1 writes the version-1 sealed format (scrypt N=2^15, r=8, p=1, AES-256-GCM) the
// way setpay wrote it before Argon2id, independently of the wallet package's code, so
// migration tests open what old releases really wrote.
func SealV1(t testing.TB, content string, plaintext, passphrase []byte) []byte {
	t.Helper()
	salt, nonce := make([]byte, 16), make([]byte, 12)
	_, err := rand.Read(salt)
	require.NoError(t, err)
	_, err = rand.Read(nonce)
	require.NoError(t, err)
	n, r, p := 1<<15, 8, 1
	key, err := scrypt.Key(passphrase, salt, n, r, p, 32)
	require.NoError(t, err)
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	g, err := cipher.NewGCM(block)
	require.NoError(t, err)
	aad := "setpay-sealed/v1\x00" + content + "\x00scrypt " + strconv.Itoa(n) + " " + strconv.Itoa(r) + " " + strconv.Itoa(p)
	b, err := json.Marshal(map[string]any{"format": "setpay-sealed/v1", "content": content, "kdf": "scrypt", "n": n, "r": r, "p": p,
		"salt": salt, "nonce": nonce, "ciphertext": g.Seal(nil, nonce, plaintext, []byte(aad))})
	require.NoError(t, err)
	return b
}
