package cms_test

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/x509"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/cms"
)

// softAgreer adapts a software ECDSA key to cms.KeyAgreer, as a token key would.
type softAgreer struct{ k *ecdsa.PrivateKey }

func (s softAgreer) Public() crypto.PublicKey { return s.k.Public() }

func (s softAgreer) ECDH(_ context.Context, peer *ecdh.PublicKey) ([]byte, error) {
	priv, err := s.k.ECDH()
	if err != nil {
		return nil, err
	}
	return priv.ECDH(peer)
}

func agreer(p party) cms.KeyAgreer { return softAgreer{p.key.(*ecdsa.PrivateKey)} }

func TestKeyAgreementRoundTrip(t *testing.T) {
	f := getFixture(t)
	for _, c := range []cms.Cipher{cms.AES256GCM} {
		t.Run(c.String(), func(t *testing.T) {
			der, err := cms.Encrypt(message, cms.EncryptOptions{
				Recipients: []*x509.Certificate{f.p256.cert, f.rsa.cert, f.p384.cert}, Cipher: c})
			require.NoError(t, err)
			env, err := cms.ParseEnvelope(der)
			require.NoError(t, err)
			require.Len(t, env.Recipients, 3)

			for _, p := range []party{f.p256, f.p384} {
				got, _, err := cms.DecryptAgree(t.Context(), der, p.cert, agreer(p))
				require.NoError(t, err)
				assert.Equal(t, message, got)
			}
			got, _, err := cms.Decrypt(der, f.rsa.cert, f.rsa.decrypter())
			require.NoError(t, err)
			assert.Equal(t, message, got)

			_, err = env.DecryptAgree(t.Context(), f.p256.cert, agreer(f.p384))
			assert.ErrorContains(t, err, "does not match")
			_, err = env.DecryptAgree(t.Context(), f.rsa.cert, agreer(f.p256))
			assert.ErrorContains(t, err, "use Decrypt")
			_, err = env.DecryptAgree(t.Context(), f.rsa2.cert, agreer(f.p256))
			assert.ErrorIs(t, err, cms.ErrNoRecipient)
			_, err = env.Decrypt(f.p256.cert, f.rsa.decrypter())
			assert.ErrorContains(t, err, "use DecryptAgree")
		})
	}
}

func TestKeyAgreementTamperedWrappedKey(t *testing.T) {
	f := getFixture(t)
	der := mustEncrypt(t, cms.EncryptOptions{Recipients: []*x509.Certificate{f.p256.cert}})
	env, err := cms.ParseEnvelope(der)
	require.NoError(t, err)
	// The wrapped key (40 bytes) sits right before the EncryptedContentInfo; find it via the
	// public parse and flip a byte in the DER.
	require.Len(t, env.Recipients, 1)
	i := len(der) - 1
	for ; i > 0; i-- { // locate "04 28" (OCTET STRING, 40 bytes)
		if der[i-1] == 0x04 && der[i] == 0x28 {
			break
		}
	}
	require.Positive(t, i)
	bad := append([]byte(nil), der...)
	bad[i+5] ^= 1
	_, _, err = cms.DecryptAgree(t.Context(), bad, f.p256.cert, agreer(f.p256))
	assert.ErrorIs(t, err, cms.ErrDecrypt)
	assert.Equal(t, cms.ErrDecrypt.Error(), err.Error(), "a failed key unwrap looks like any other decryption failure")
}

// Key agreement follows the same cipher policy: an EnvelopedData (AES-CBC) is
// refused before the key agrees anything.
func TestKeyAgreementRefusesCBC(t *testing.T) {
	f := getFixture(t)
	der := mustEncrypt(t, cms.EncryptOptions{Recipients: []*x509.Certificate{f.p256.cert}, Cipher: cms.AES256CBC})
	var calls int
	_, _, err := cms.DecryptAgree(t.Context(), der, f.p256.cert, countingAgreer{agreer(f.p256), &calls})
	assert.ErrorIs(t, err, cms.ErrNotAuthenticated)
	assert.Zero(t, calls, "no key operation for a refused cipher")
}

type countingAgreer struct {
	cms.KeyAgreer
	n *int
}

func (c countingAgreer) ECDH(ctx context.Context, peer *ecdh.PublicKey) ([]byte, error) {
	*c.n++
	return c.KeyAgreer.ECDH(ctx, peer)
}

func TestOpenSSLKeyAgreementInterop(t *testing.T) {
	openssl(t)
	f := getFixture(t)
	for _, p := range []party{f.p256, f.p384} {
		for _, c := range []struct {
			ours cms.Cipher
			flag string
		}{{cms.AES256CBC, "-aes256"}, {cms.AES256GCM, "-aes-256-gcm"}} {
			t.Run(p.cert.Subject.CommonName+"/"+c.ours.String(), func(t *testing.T) {
				dir := t.TempDir()
				writeCertPEM(t, dir, "cert.pem", p.cert)
				writeKeyPEM(t, dir, "key.pem", p.key)
				writeFile(t, dir, "content.bin", message)

				der := mustEncrypt(t, cms.EncryptOptions{Recipients: []*x509.Certificate{p.cert}, Cipher: c.ours})
				writeFile(t, dir, "ours.der", der)
				runOpenSSL(t, dir, "cms", "-decrypt", "-inform", "DER", "-in", "ours.der", "-recip", "cert.pem",
					"-inkey", "key.pem", "-out", "out.bin")
				assert.Equal(t, message, readFile(t, filepath.Join(dir, "out.bin")))

				runOpenSSL(t, dir, "cms", "-encrypt", "-binary", c.flag, "-in", "content.bin", "-recip", "cert.pem",
					"-keyopt", "ecdh_kdf_md:sha256", "-outform", "DER", "-out", "theirs.der")
				got, _, err := cms.DecryptAgree(t.Context(), readFile(t, filepath.Join(dir, "theirs.der")), p.cert, agreer(p))
				if c.ours == cms.AES256CBC {
					assert.ErrorIs(t, err, cms.ErrNotAuthenticated, "OpenSSL's CBC envelope is refused: no integrity")
					return
				}
				require.NoError(t, err)
				assert.Equal(t, message, got)
			})
		}
	}
}

// OpenSSL's default KDF for EC recipients is SHA-1 based; it is refused clearly.
func TestRejectsSHA1KDF(t *testing.T) {
	openssl(t)
	f := getFixture(t)
	dir := t.TempDir()
	writeCertPEM(t, dir, "cert.pem", f.p256.cert)
	writeFile(t, dir, "content.bin", message)
	runOpenSSL(t, dir, "cms", "-encrypt", "-binary", "-aes-256-gcm", "-in", "content.bin", "-recip", "cert.pem",
		"-keyopt", "ecdh_kdf_md:sha1", "-outform", "DER", "-out", "theirs.der")
	_, _, err := cms.DecryptAgree(t.Context(), readFile(t, filepath.Join(dir, "theirs.der")), f.p256.cert, agreer(f.p256))
	assert.ErrorContains(t, err, "key agreement algorithm")
	assert.ErrorContains(t, err, "not supported")
}
