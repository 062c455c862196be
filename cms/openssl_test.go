package cms_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/cms"
)

// Our SignedData must verify with `openssl cms -verify` against the root.
func TestOpenSSLVerifiesOurSignedData(t *testing.T) {
	openssl(t)
	f := getFixture(t)
	tests := []struct {
		name     string
		signer   party
		pss      bool
		detached bool
		embed    bool
		ski      bool
		ct       x509.OID
	}{
		{name: "RSA PKCS1v15", signer: f.rsa, embed: true},
		{name: "RSA PSS", signer: f.rsa, pss: true, embed: true},
		{name: "RSA PSS detached no certs", signer: f.rsa, pss: true, detached: true},
		{name: "ECDSA P-256 protocol type", signer: f.p256, embed: true, ct: cms.ProtocolContentType(1)},
		{name: "ECDSA P-384", signer: f.p384, embed: true},
		{name: "ECDSA P-256 by SKI", signer: f.p256, ski: true, embed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := cms.SignOptions{ContentType: tc.ct, Signer: tc.signer.key, Certificate: tc.signer.cert,
				Detached: tc.detached, SigningTime: testNow, PSS: tc.pss, SubjectKeyID: tc.ski}
			if tc.embed {
				opts.Certificates = []*x509.Certificate{tc.signer.cert}
			}
			der, err := cms.Sign(message, opts)
			require.NoError(t, err)
			writeFile(t, dir, "sig.der", der)
			writeCertPEM(t, dir, "root.pem", f.root.cert)
			args := []string{"cms", "-verify", "-inform", "DER", "-in", "sig.der", "-CAfile", "root.pem", "-out", "out.bin"}
			if !tc.embed {
				writeCertPEM(t, dir, "signer.pem", tc.signer.cert)
				args = append(args, "-certfile", "signer.pem")
			}
			if tc.detached {
				writeFile(t, dir, "content.bin", message)
				args = append(args, "-content", "content.bin", "-binary")
			}
			out := runOpenSSL(t, dir, args...)
			assert.Contains(t, out, "Verification successful")
			assert.Equal(t, message, readFile(t, filepath.Join(dir, "out.bin")))
		})
	}
}

// `openssl cms -sign` output must verify with ours.
func TestWeVerifyOpenSSLSignedData(t *testing.T) {
	openssl(t)
	f := getFixture(t)
	tests := []struct {
		name   string
		signer party
		extra  []string
	}{
		{name: "RSA PKCS1v15", signer: f.rsa},
		{name: "RSA PSS", signer: f.rsa, extra: []string{"-keyopt", "rsa_padding_mode:pss"}},
		{name: "RSA PSS salt 32", signer: f.rsa, extra: []string{"-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:32"}},
		{name: "RSA SHA-384", signer: f.rsa, extra: []string{"-md", "sha384"}},
		{name: "ECDSA P-256", signer: f.p256},
		{name: "ECDSA P-384 SHA-384", signer: f.p384, extra: []string{"-md", "sha384"}},
		{name: "ECDSA P-256 detached no certs", signer: f.p256, extra: []string{"-nocerts"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "content.bin", message)
			writeCertPEM(t, dir, "signer.pem", tc.signer.cert)
			writeKeyPEM(t, dir, "key.pem", tc.signer.key)
			detached := false
			args := []string{"cms", "-sign", "-binary", "-in", "content.bin", "-signer", "signer.pem", "-inkey", "key.pem",
				"-outform", "DER", "-out", "sig.der"}
			for _, a := range tc.extra {
				if a == "-nocerts" {
					detached = true
				}
			}
			if !detached {
				args = append(args, "-nodetach")
			}
			runOpenSSL(t, dir, append(args, tc.extra...)...)

			sd, err := cms.ParseSignedData(readFile(t, filepath.Join(dir, "sig.der")))
			require.NoError(t, err)
			vo := cms.VerifyOptions{}
			if detached {
				assert.Empty(t, sd.Certificates())
				vo.Certificates = []*x509.Certificate{tc.signer.cert}
				vo.Content = message
			} else {
				assert.Equal(t, message, sd.Content())
			}
			assert.False(t, sd.SigningTime().IsZero())
			signer, err := sd.Verify(vo)
			require.NoError(t, err)
			assert.True(t, signer.Equal(tc.signer.cert))
		})
	}
}

// SHA-1 and MD5 signatures made by OpenSSL must be refused.
func TestRejectsWeakOpenSSLSignatures(t *testing.T) {
	openssl(t)
	f := getFixture(t)
	for _, md := range []string{"sha1", "md5"} {
		t.Run(md, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "content.bin", message)
			writeCertPEM(t, dir, "signer.pem", f.rsa.cert)
			writeKeyPEM(t, dir, "key.pem", f.rsa.key)
			out, err := tryOpenSSL(t, dir, "cms", "-sign", "-binary", "-nodetach", "-in", "content.bin", "-signer", "signer.pem",
				"-inkey", "key.pem", "-outform", "DER", "-out", "sig.der", "-md", md)
			if err != nil {
				t.Skipf("this openssl refuses to sign with %s: %s", md, out)
			}
			_, err = cms.ParseSignedData(readFile(t, filepath.Join(dir, "sig.der")))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "digest algorithm "+md+" not allowed")
		})
	}
}

// Our envelopes must decrypt with `openssl cms -decrypt`.
func TestOpenSSLDecryptsOurEnvelopes(t *testing.T) {
	openssl(t)
	f := getFixture(t)
	for _, c := range []cms.Cipher{cms.AES256CBC, cms.AES256GCM} {
		for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
			t.Run(c.String()+"/OAEP-"+h.String(), func(t *testing.T) {
				dir := t.TempDir()
				der, err := cms.Encrypt(message, cms.EncryptOptions{
					Recipients: []*x509.Certificate{f.rsa2.cert, f.rsa.cert}, Cipher: c, OAEPHash: h})
				require.NoError(t, err)
				writeFile(t, dir, "env.der", der)
				writeCertPEM(t, dir, "cert.pem", f.rsa.cert)
				writeKeyPEM(t, dir, "key.pem", f.rsa.key)
				runOpenSSL(t, dir, "cms", "-decrypt", "-inform", "DER", "-in", "env.der",
					"-recip", "cert.pem", "-inkey", "key.pem", "-out", "out.bin")
				assert.Equal(t, message, readFile(t, filepath.Join(dir, "out.bin")))
			})
		}
	}
}

// `openssl cms -encrypt` output must decrypt with ours.
func TestWeDecryptOpenSSLEnvelopes(t *testing.T) {
	openssl(t)
	f := getFixture(t)
	tests := []struct {
		name     string
		cipher   string
		oaepMD   string
		wantHash crypto.Hash
		want     cms.Cipher
	}{
		{"CBC OAEP-SHA1", "-aes256", "", crypto.SHA1, cms.AES256CBC},
		{"CBC OAEP-SHA256", "-aes256", "sha256", crypto.SHA256, cms.AES256CBC},
		{"GCM OAEP-SHA1", "-aes-256-gcm", "", crypto.SHA1, cms.AES256GCM},
		{"GCM OAEP-SHA256", "-aes-256-gcm", "sha256", crypto.SHA256, cms.AES256GCM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "content.bin", message)
			writeCertPEM(t, dir, "cert.pem", f.rsa.cert)
			args := []string{"cms", "-encrypt", "-binary", tc.cipher, "-in", "content.bin", "-recip", "cert.pem",
				"-keyopt", "rsa_padding_mode:oaep", "-outform", "DER", "-out", "env.der"}
			if tc.oaepMD != "" {
				args = append(args, "-keyopt", "rsa_oaep_md:"+tc.oaepMD)
			}
			runOpenSSL(t, dir, args...)
			der := readFile(t, filepath.Join(dir, "env.der"))

			env, err := cms.ParseEnvelope(der)
			require.NoError(t, err)
			assert.Equal(t, tc.want, env.Cipher)
			r, err := env.Recipient(f.rsa.cert)
			require.NoError(t, err)
			assert.Equal(t, tc.wantHash, r.OAEPHash)
			assert.Equal(t, tc.wantHash, r.MGFHash)

			got, ct, err := cms.Decrypt(der, f.rsa.cert, f.rsa.decrypter())
			if tc.want == cms.AES256CBC {
				// Parsed, but not decrypted: CBC has no integrity (padding oracle).
				assert.ErrorIs(t, err, cms.ErrNotAuthenticated)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, message, got)
			assert.True(t, ct.Equal(cms.DataContentType()))
		})
	}
}

// OpenSSL's default RSA key transport is PKCS#1 v1.5, which we refuse clearly.
func TestRejectsPKCS1v15KeyTransport(t *testing.T) {
	openssl(t)
	f := getFixture(t)
	dir := t.TempDir()
	writeFile(t, dir, "content.bin", message)
	writeCertPEM(t, dir, "cert.pem", f.rsa.cert)
	runOpenSSL(t, dir, "cms", "-encrypt", "-binary", "-aes-256-gcm", "-in", "content.bin", "-recip", "cert.pem",
		"-outform", "DER", "-out", "env.der")
	der := readFile(t, filepath.Join(dir, "env.der"))
	env, err := cms.ParseEnvelope(der)
	require.NoError(t, err)
	require.Len(t, env.Recipients, 1)
	assert.ErrorContains(t, env.Recipients[0].Unsupported, "PKCS#1 v1.5")
	_, _, err = cms.Decrypt(der, f.rsa.cert, f.rsa.decrypter())
	assert.ErrorContains(t, err, "PKCS#1 v1.5 key transport is not accepted")
}

// The parameter encodings must be byte-identical to OpenSSL's, which is
// what other strict CMS readers are tested against.
func TestAlgorithmParamsMatchOpenSSL(t *testing.T) {
	openssl(t)
	f := getFixture(t)
	pssAlgID := mustHex(t, "3041"+"06092a864886f70d01010a"+"3034"+
		"a00f300d0609608648016503040201"+"0500"+
		"a11c301a06092a864886f70d010108300d0609608648016503040201"+"0500"+
		"a203020120")
	oaepSHA256AlgID := mustHex(t, "3038"+"06092a864886f70d010107"+"302b"+
		"a00d300b0609608648016503040201"+
		"a11a301806092a864886f70d010108300b0609608648016503040201")
	oaepSHA1AlgID := mustHex(t, "300d06092a864886f70d0101073000")

	dir := t.TempDir()
	writeFile(t, dir, "content.bin", message)
	writeCertPEM(t, dir, "cert.pem", f.rsa.cert)
	writeKeyPEM(t, dir, "key.pem", f.rsa.key)
	runOpenSSL(t, dir, "cms", "-sign", "-binary", "-nodetach", "-in", "content.bin", "-signer", "cert.pem", "-inkey", "key.pem",
		"-outform", "DER", "-out", "sig.der", "-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:32")
	runOpenSSL(t, dir, "cms", "-encrypt", "-binary", "-aes256", "-in", "content.bin", "-recip", "cert.pem",
		"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-outform", "DER", "-out", "env256.der")
	runOpenSSL(t, dir, "cms", "-encrypt", "-binary", "-aes256", "-in", "content.bin", "-recip", "cert.pem",
		"-keyopt", "rsa_padding_mode:oaep", "-outform", "DER", "-out", "env1.der")

	ours, err := cms.Sign(message, cms.SignOptions{Signer: f.rsa.key, Certificate: f.rsa.cert, SigningTime: testNow, PSS: true})
	require.NoError(t, err)
	assert.True(t, bytes.Contains(readFile(t, filepath.Join(dir, "sig.der")), pssAlgID), "OpenSSL PSS params differ from expectation")
	assert.True(t, bytes.Contains(ours, pssAlgID), "our PSS params differ from OpenSSL's")

	ours = mustEncrypt(t, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, OAEPHash: crypto.SHA256})
	assert.True(t, bytes.Contains(readFile(t, filepath.Join(dir, "env256.der")), oaepSHA256AlgID))
	assert.True(t, bytes.Contains(ours, oaepSHA256AlgID), "our OAEP-SHA256 params differ from OpenSSL's")

	ours = mustEncrypt(t, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}})
	assert.True(t, bytes.Contains(readFile(t, filepath.Join(dir, "env1.der")), oaepSHA1AlgID))
	assert.True(t, bytes.Contains(ours, oaepSHA1AlgID), "our OAEP-SHA1 params differ from OpenSSL's")
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}
