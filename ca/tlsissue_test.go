package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

func tlsCSR(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	require.NoError(t, err)
	return der
}

// TestTLSCAIssuesOneUsagePerCertificate (issue 11 item 3): the CA's TLS CA, its key in
// the CA token, certifies a CSR's key for exactly one use and refuses CSRs it must not
// sign.
func TestTLSCAIssuesOneUsagePerCertificate(t *testing.T) {
	ctx := context.Background()
	rootTok, tok := softhsmtest.NewToken(t), softhsmtest.NewToken(t)
	dir := filepath.Join(t.TempDir(), "ca")
	_, err := ca.InitDir(ctx, ca.InitConfig{RootToken: rootTok, Token: tok, Dir: dir, Brand: "T", Org: "T", TLSName: "127.0.0.1", Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	_, err = ca.LoadTLSCA(ctx, dir, rootTok)
	assert.ErrorContains(t, err, "TLS issuer key", "the TLS CA key is in the CA token, not the root's")
	tlsCA, err := ca.LoadTLSCA(ctx, dir, tok)
	require.NoError(t, err)

	// The requesters' keys are software keys: what is under test is the CA's side.
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	require.NoError(t, err)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	server := tlsCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw.example"},
		DNSNames: []string{"gw.example"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.5")}})
	client := tlsCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "merchant:shop-1"}})

	t.Run("server", func(t *testing.T) {
		chain, err := tlsCA.Issue(ca.TLSRequest{CSR: server, Usage: ca.TLSServer})
		require.NoError(t, err)
		require.Len(t, chain, 2)
		leaf := chain[0]
		assert.True(t, chain[1].Equal(tlsCA.Certificate()))
		assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, leaf.ExtKeyUsage)
		assert.Equal(t, x509.KeyUsageDigitalSignature, leaf.KeyUsage)
		assert.Equal(t, []string{"gw.example"}, leaf.DNSNames)
		assert.Equal(t, "10.0.0.5", leaf.IPAddresses[0].String())
		assert.False(t, leaf.IsCA)
		assert.WithinDuration(t, time.Now().Add(ca.DefaultTLSValidity), leaf.NotAfter, time.Minute)
		pool := x509.NewCertPool()
		pool.AddCert(tlsCA.Certificate())
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "gw.example", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		assert.NoError(t, err)
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		assert.Error(t, err, "a server certificate is no client's")
	})
	t.Run("client", func(t *testing.T) {
		chain, err := tlsCA.Issue(ca.TLSRequest{CSR: server, Usage: ca.TLSClient, Validity: 24 * time.Hour})
		require.NoError(t, err)
		leaf := chain[0]
		assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, leaf.ExtKeyUsage)
		assert.Empty(t, leaf.DNSNames, "a client certificate names no server, whatever the CSR asked")
		assert.Empty(t, leaf.IPAddresses)
		assert.WithinDuration(t, time.Now().Add(24*time.Hour), leaf.NotAfter, time.Minute)
	})

	tampered := append([]byte(nil), server...)
	tampered[len(tampered)-3] ^= 0x01
	cases := []struct {
		name string
		req  ca.TLSRequest
		want string
	}{
		{"tampered", ca.TLSRequest{CSR: tampered, Usage: ca.TLSServer}, "signature"},
		{"not DER", ca.TLSRequest{CSR: []byte("hello"), Usage: ca.TLSServer}, "CSR"},
		{"empty", ca.TLSRequest{Usage: ca.TLSServer}, "empty"},
		{"server without names", ca.TLSRequest{CSR: client, Usage: ca.TLSServer}, "at least one DNS name or IP address"},
		{"unknown usage", ca.TLSRequest{CSR: server, Usage: 7}, "usage"},
		{"P-224", ca.TLSRequest{CSR: tlsCSR(t, p224, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, DNSNames: []string{"x"}}), Usage: ca.TLSServer}, "P-224"},
		{"RSA-1024", ca.TLSRequest{CSR: tlsCSR(t, rsa1024, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, DNSNames: []string{"x"}}), Usage: ca.TLSServer}, "1024 bits"},
		{"no CN", ca.TLSRequest{CSR: tlsCSR(t, p256, &x509.CertificateRequest{DNSNames: []string{"x"}}), Usage: ca.TLSServer}, "common name"},
		{"e-mail name", ca.TLSRequest{CSR: tlsCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, EmailAddresses: []string{"a@b.example"}}), Usage: ca.TLSClient}, "only DNS names and IP addresses"},
		{"wildcard", ca.TLSRequest{CSR: tlsCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, DNSNames: []string{"*.example"}}), Usage: ca.TLSServer}, "not allowed"},
		{"validity too long", ca.TLSRequest{CSR: server, Usage: ca.TLSServer, Validity: ca.MaxTLSValidity + time.Hour}, "outside"},
		{"validity too short", ca.TLSRequest{CSR: server, Usage: ca.TLSServer, Validity: time.Minute}, "outside"},
		{"past the TLS CA", ca.TLSRequest{CSR: server, Usage: ca.TLSServer, Now: tlsCA.Certificate().NotAfter.Add(-time.Hour)}, "after the TLS CA's own"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := tlsCA.Issue(tc.req)
			assert.ErrorContains(t, err, tc.want)
			assert.Nil(t, chain)
		})
	}
}

func TestParseTLSUsage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ca.TLSUsage
		ok   bool
	}{{"server", ca.TLSServer, true}, {"client", ca.TLSClient, true}, {"both", 0, false}, {"", 0, false}, {"Server", 0, false}} {
		got, err := ca.ParseTLSUsage(tc.in)
		assert.Equal(t, tc.ok, err == nil, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
}
