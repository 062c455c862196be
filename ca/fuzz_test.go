package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzParseRequest covers the two parsers of untrusted request bytes: the
// PKCS#10 CSR and the key-exchange SubjectPublicKeyInfo. Seeds are real
// requests (software keys: this internal test cannot import catest).
func FuzzParseRequest(f *testing.F) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(f, err)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(f, err)
	for _, k := range []any{ec, rk} {
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "merchant:shop-1"}}, k)
		require.NoError(f, err)
		f.Add(csr)
		var pub any = &ec.PublicKey
		if r, ok := k.(*rsa.PrivateKey); ok {
			pub = &r.PublicKey
		}
		spki, err := x509.MarshalPKIXPublicKey(pub)
		require.NoError(f, err)
		f.Add(spki)
	}
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		csr, err := parseCSR(in)
		if err != nil {
			var e *Error
			assert.True(t, errors.As(err, &e), "typed error: %v", err)
			assert.Nil(t, csr)
		} else {
			assert.NoError(t, csr.CheckSignature())
		}
		if _, err := parseSPKI(in); err != nil {
			var e *Error
			assert.True(t, errors.As(err, &e), "typed error: %v", err)
		}
	})
}
