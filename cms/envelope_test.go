package cms_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/cms"
)

func mustEncrypt(t testing.TB, opts cms.EncryptOptions) []byte {
	t.Helper()
	der, err := cms.Encrypt(message, opts)
	require.NoError(t, err)
	return der
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	f := getFixture(t)
	for _, c := range []cms.Cipher{cms.AES256CBC, cms.AES256GCM} {
		for _, h := range []crypto.Hash{0, crypto.SHA1, crypto.SHA256, crypto.SHA384} {
			for _, content := range [][]byte{{}, message, bytes.Repeat([]byte{7}, 4096)} {
				t.Run(c.String()+"/"+h.String(), func(t *testing.T) {
					ct := cms.ProtocolContentType(3)
					der, err := cms.Encrypt(content, cms.EncryptOptions{
						Recipients:  []*x509.Certificate{f.rsa2.cert, f.rsa.cert},
						ContentType: ct, Cipher: c, OAEPHash: h,
					})
					require.NoError(t, err)

					env, err := cms.ParseEnvelope(der)
					require.NoError(t, err)
					assert.Equal(t, c, env.Cipher)
					require.Len(t, env.Recipients, 2)
					r, err := env.Recipient(f.rsa.cert)
					require.NoError(t, err)
					wantHash := h
					if wantHash == 0 {
						wantHash = crypto.SHA1
					}
					assert.Equal(t, wantHash, r.OAEPHash)
					assert.Equal(t, wantHash, r.MGFHash)
					assert.NoError(t, r.Unsupported)

					for _, p := range []party{f.rsa, f.rsa2} {
						got, gotCT, err := cms.Decrypt(der, p.cert, p.decrypter())
						require.NoError(t, err)
						assert.Equal(t, content, got)
						assert.True(t, gotCT.Equal(ct))
					}
				})
			}
		}
	}
}

func TestEncryptOptionErrors(t *testing.T) {
	f := getFixture(t)
	tests := []struct {
		name string
		opts cms.EncryptOptions
		want string
	}{
		{"no recipients", cms.EncryptOptions{}, "at least one recipient"},
		{"nil recipient", cms.EncryptOptions{Recipients: []*x509.Certificate{nil}}, "is nil"},
		{"MD5 OAEP", cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, OAEPHash: crypto.MD5}, "OAEP hash"},
		{"bad cipher", cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, Cipher: cms.Cipher(9)}, "unknown cipher"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cms.Encrypt(message, tc.opts)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

func TestDecryptRejects(t *testing.T) {
	f := getFixture(t)
	long := bytes.Repeat([]byte("0123456789abcdef"), 4)
	enc := func(c cms.Cipher) []byte {
		der, err := cms.Encrypt(long, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, Cipher: c})
		require.NoError(t, err)
		return der
	}
	gcm, cbc := enc(cms.AES256GCM), enc(cms.AES256CBC)

	flip := func(der []byte, fromEnd int) []byte {
		out := bytes.Clone(der)
		out[len(out)-fromEnd] ^= 0xff
		return out
	}
	aes256CBC := []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a}
	aes256GCM := []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2e}
	aes128CBC := []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02}

	tests := []struct {
		name  string
		der   []byte
		who   party
		want  string
		isErr error
	}{
		{name: "wrong recipient", der: gcm, who: f.rsa2, isErr: cms.ErrNoRecipient},
		{name: "tampered GCM tag", der: flip(gcm, 1), who: f.rsa, want: "content decryption failed"},
		{name: "tampered GCM ciphertext", der: flip(gcm, 20), who: f.rsa, want: "content decryption failed"},
		// Flipping the last byte of the next-to-last block flips the padding byte.
		{name: "tampered CBC padding", der: flip(cbc, 17), who: f.rsa, want: "content decryption failed"},
		{name: "GCM inside EnvelopedData", der: mutate(t, cbc, aes256CBC, aes256GCM), who: f.rsa, want: "belongs in AuthEnvelopedData"},
		{name: "AES-128", der: mutate(t, cbc, aes256CBC, aes128CBC), who: f.rsa, want: "not supported"},
		{name: "truncated", der: gcm[:len(gcm)-1], who: f.rsa, want: "malformed"},
		{name: "garbage", der: []byte{0x30, 0x03, 0x02, 0x01, 0x00}, who: f.rsa, want: "malformed"},
		{name: "SignedData", der: mustSign(t, f.p256), who: f.rsa, want: "want EnvelopedData"},
		{name: "key mismatch", der: gcm, who: party{f.rsa.cert, f.rsa2.key}, want: "does not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := cms.Decrypt(tc.der, tc.who.cert, tc.who.decrypter())
			require.Error(t, err)
			if tc.isErr != nil {
				assert.True(t, errors.Is(err, tc.isErr), "got %v", err)
			}
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestEnvelopeTruncations(t *testing.T) {
	f := getFixture(t)
	for _, c := range []cms.Cipher{cms.AES256CBC, cms.AES256GCM} {
		der := mustEncrypt(t, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, Cipher: c})
		for n := 0; n < len(der); n++ {
			_, err := cms.ParseEnvelope(der[:n])
			require.Error(t, err, "truncated to %d bytes", n)
		}
	}
}

func TestEnvelopeLimits(t *testing.T) {
	f := getFixture(t)
	der := mustEncrypt(t, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert, f.rsa2.cert}})
	_, err := cms.Limits{MaxRecipients: 1}.ParseEnvelope(der)
	assert.ErrorContains(t, err, "more than 1 recipients")
	_, err = cms.Limits{MaxSize: 100}.ParseEnvelope(der)
	assert.ErrorContains(t, err, "exceeds the limit")
}

func mustSign(t testing.TB, p party) []byte {
	t.Helper()
	der, err := cms.Sign(message, cms.SignOptions{Signer: p.key, Certificate: p.cert, SigningTime: testNow})
	require.NoError(t, err)
	return der
}
