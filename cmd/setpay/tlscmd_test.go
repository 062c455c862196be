package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/softhsm"
)

// caWorld is a CA made from nothing with the built binary, as docs/pki.md does it:
// a SoftHSM directory with the CA's and the parties' tokens, and `ca init`.
type caWorld struct {
	cli
	softhsm string // ./var/softhsm, relative to dir
	caDir   string // ./var/ca
}

func newCAWorld(t *testing.T) caWorld {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary and runs a whole CA; skipped with -short")
	}
	w := caWorld{cli: cli{t: t, dir: t.TempDir()}, softhsm: "./var/softhsm", caDir: "./var/ca"}
	w.run("hsm", "init-softhsm", "--softhsm-dir", w.softhsm, "--tokens", "setpay-root,setpay-ca,setpay-gateway,setpay-merchant")
	w.run("ca", "init", "--softhsm-dir", w.softhsm, "--root-token", "setpay-root", "--token", "setpay-ca", "--ca-dir", w.caDir, "--store", "sqlite:./var/setpay.db")
	return w
}

func (w caWorld) path(p string) string { return filepath.Join(w.dir, p) }

// openToken opens one of the world's tokens in this process, as a service does, to
// look at its keys. SoftHSM reads SOFTHSM2_CONF at its first initialisation only, so
// this is the test binary's one in-process user of a SoftHSM directory.
func (w caWorld) openToken(t *testing.T, label string) *hsm.Token {
	t.Helper()
	d := softhsm.Dir{Root: w.path(w.softhsm)}
	t.Setenv("SOFTHSM2_CONF", d.ConfPath())
	path, err := softhsm.FindModule()
	require.NoError(t, err)
	mod, err := hsm.OpenModule(path, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = mod.Close() })
	tok, err := mod.OpenToken(context.Background(), hsm.TokenConfig{Selector: hsm.Selector{Label: label}, PIN: hsm.PINSource("file:" + d.PINFile())})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tok.Close() })
	return tok
}

func readCSRFile(t *testing.T, path string) *x509.CertificateRequest {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	blk, _ := pem.Decode(b)
	require.NotNil(t, blk, "%s holds PEM", path)
	require.Equal(t, "CERTIFICATE REQUEST", blk.Type)
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	require.NoError(t, err)
	require.NoError(t, csr.CheckSignature())
	return csr
}

func readChainFile(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	cs, err := readPEMCerts(path)
	require.NoError(t, err, path)
	return cs
}

// TestTLSRequestAndIssueKeepKeysInTheToken (issue 11 item 3): `tls request` makes the
// TLS key in the service's token and a CSR it signs; `ca tls-issue` certifies it as a
// server or a client with exactly that one extended key usage; the keys are sensitive
// and never extractable; a mutual-TLS gRPC handshake works with the issued
// certificates and the token keys, and a client certificate cannot serve.
func TestTLSRequestAndIssueKeepKeysInTheToken(t *testing.T) {
	w := newCAWorld(t)
	w.run("tls", "request", "--softhsm-dir", w.softhsm, "--token", "setpay-gateway", "--label", "gateway-tls",
		"--name", "localhost,127.0.0.1", "--out", "gateway-tls.csr")
	w.run("tls", "request", "--softhsm-dir", w.softhsm, "--token", "setpay-merchant", "--label", "merchant-client-tls",
		"--name", "merchant:shop-1", "--out", "merchant-client-tls.csr")
	w.run("ca", "tls-issue", "--ca-dir", w.caDir, "--softhsm-dir", w.softhsm, "--csr", "gateway-tls.csr", "--usage", "server", "--out", "gateway-tls.pem")
	w.run("ca", "tls-issue", "--ca-dir", w.caDir, "--softhsm-dir", w.softhsm, "--csr", "merchant-client-tls.csr", "--usage", "client",
		"--out", "merchant-client-tls.pem", "--validity", "30d")

	tlsCA := readChainFile(t, w.path("var/ca/tls-ca.pem"))[0]
	srvCSR, cliCSR := readCSRFile(t, w.path("gateway-tls.csr")), readCSRFile(t, w.path("merchant-client-tls.csr"))
	srvChain, cliChain := readChainFile(t, w.path("gateway-tls.pem")), readChainFile(t, w.path("merchant-client-tls.pem"))
	for _, c := range []struct {
		name  string
		chain []*x509.Certificate
		csr   *x509.CertificateRequest
		eku   x509.ExtKeyUsage
	}{{"server", srvChain, srvCSR, x509.ExtKeyUsageServerAuth}, {"client", cliChain, cliCSR, x509.ExtKeyUsageClientAuth}} {
		require.Len(t, c.chain, 2, "%s: leaf and TLS CA", c.name)
		leaf := c.chain[0]
		assert.True(t, c.chain[1].Equal(tlsCA), "%s: the chain ends at tls-ca.pem", c.name)
		assert.NoError(t, leaf.CheckSignatureFrom(tlsCA), c.name)
		assert.Equal(t, []x509.ExtKeyUsage{c.eku}, leaf.ExtKeyUsage, "%s: exactly one extended key usage", c.name)
		assert.Empty(t, leaf.UnknownExtKeyUsage, c.name)
		assert.Equal(t, x509.KeyUsageDigitalSignature, leaf.KeyUsage, c.name)
		assert.False(t, leaf.IsCA, c.name)
		assert.True(t, pubEq(leaf.PublicKey, c.csr.PublicKey), "%s: certificate key is the CSR's", c.name)
	}
	assert.Equal(t, []string{"localhost"}, srvChain[0].DNSNames)
	require.Len(t, srvChain[0].IPAddresses, 1)
	assert.Equal(t, "127.0.0.1", srvChain[0].IPAddresses[0].String())
	assert.Equal(t, "merchant:shop-1", cliChain[0].Subject.CommonName, "the name the gateway knows the merchant by")
	assert.Empty(t, cliChain[0].DNSNames, "a client certificate names no server")
	assert.Empty(t, cliChain[0].IPAddresses)
	assert.WithinDuration(t, time.Now().Add(30*24*time.Hour), cliChain[0].NotAfter, time.Hour, "--validity 30d")
	assert.WithinDuration(t, time.Now().Add(90*24*time.Hour), srvChain[0].NotAfter, time.Hour, "default validity 90d")

	// A second request under the label reuses the key: no second key, same public key.
	w.run("tls", "request", "--softhsm-dir", w.softhsm, "--token", "setpay-gateway", "--label", "gateway-tls",
		"--name", "localhost", "--out", "again.csr")
	assert.True(t, pubEq(srvCSR.PublicKey, readCSRFile(t, w.path("again.csr")).PublicKey))

	// The keys sit in the tokens, sensitive and never extractable, and are the CSRs' keys.
	gwTok, mTok := w.openToken(t, "setpay-gateway"), w.openToken(t, "setpay-merchant")
	ctx := context.Background()
	srvKey, err := gwTok.FindKey(ctx, "gateway-tls")
	require.NoError(t, err)
	cliKey, err := mTok.FindKey(ctx, "merchant-client-tls")
	require.NoError(t, err)
	assert.True(t, pubEq(srvKey.Public(), srvCSR.PublicKey), "CSR key is the token key")
	assert.True(t, pubEq(cliKey.Public(), cliCSR.PublicKey), "CSR key is the token key")
	for _, tok := range []*hsm.Token{gwTok, mTok} {
		objs, err := tok.Objects(ctx)
		require.NoError(t, err)
		found := 0
		for _, o := range objs {
			if o.Class != "private" || !strings.HasSuffix(o.Label, "-tls") {
				continue
			}
			found++
			assert.True(t, o.Flags["CKA_SENSITIVE"], o.URI)
			assert.True(t, o.Flags["CKA_NEVER_EXTRACTABLE"], o.URI)
			assert.False(t, o.Flags["CKA_EXTRACTABLE"], o.URI)
		}
		assert.Equal(t, 1, found, "one TLS private key in %s", tok.Label())
	}

	// Mutual TLS with the token keys: the server (serverAuth) and the client (clientAuth).
	srvID := tlsrpc.Identity{Cert: srvChain[0], Key: srvKey, Chain: srvChain[1:]}
	cliID := tlsrpc.Identity{Cert: cliChain[0], Key: cliKey, Chain: cliChain[1:]}
	pool := x509.NewCertPool()
	pool.AddCert(tlsCA)
	assert.NoError(t, healthCheckOverTLS(t, srvID, &cliID, pool, "127.0.0.1"), "mutual TLS with the issued certificates")
	// A client certificate cannot serve, and a server certificate cannot be a client.
	err = healthCheckOverTLS(t, cliID, &cliID, pool, "127.0.0.1")
	if assert.Error(t, err, "a client certificate used as a server") {
		// Go's TLS stack refuses it (no server name and no serverAuth usage).
		assert.Contains(t, err.Error(), "failed to verify certificate")
	}
	assert.Error(t, healthCheckOverTLS(t, srvID, &srvID, pool, "127.0.0.1"), "a server certificate used as a client")
}

// healthCheckOverTLS serves gRPC health on loopback with server's identity, requiring
// client certificates from pool, and asks it once as client.
func healthCheckOverTLS(t *testing.T, server tlsrpc.Identity, client *tlsrpc.Identity, pool *x509.CertPool, serverName string) error {
	t.Helper()
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsrpc.ServerTLS(server, pool))))
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	lis, err := netListen()
	require.NoError(t, err)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(client, pool, serverName))))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, res.GetStatus())
	return nil
}

// TestTLSIssueRefusesBadRequests (issue 11 item 3): a tampered or missing CSR, an
// unknown usage, an existing --out and a label holding another kind of key are
// refused with the cause, and nothing is written.
func TestTLSIssueRefusesBadRequests(t *testing.T) {
	w := newCAWorld(t)
	w.run("tls", "request", "--softhsm-dir", w.softhsm, "--token", "setpay-gateway", "--label", "gw-tls", "--name", "127.0.0.1", "--out", "gw.csr")
	w.run("tls", "request", "--softhsm-dir", w.softhsm, "--token", "setpay-merchant", "--label", "m-tls", "--name", "merchant:shop-1", "--out", "client.csr")
	good, err := os.ReadFile(w.path("gw.csr"))
	require.NoError(t, err)
	blk, _ := pem.Decode(good)
	tampered := bytes.Clone(blk.Bytes)
	tampered[len(tampered)-5] ^= 0x55 // inside the signature
	require.NoError(t, os.WriteFile(w.path("tampered.csr"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), 0o644))
	require.NoError(t, os.WriteFile(w.path("cert.csr"), []byte(mustReadFile(t, w.path("var/ca/tls-ca.pem"))), 0o644))
	require.NoError(t, os.WriteFile(w.path("exists.pem"), []byte("keep me\n"), 0o644))
	w.run("hsm", "keygen", "--softhsm-dir", w.softhsm, "--token", "setpay-gateway", "--label", "rsa-key", "--alg", "rsa2048", "--usage", "sign")

	issue := func(csr, usage, out string, more ...string) []string {
		return append([]string{"ca", "tls-issue", "--ca-dir", w.caDir, "--softhsm-dir", w.softhsm, "--csr", csr, "--usage", usage, "--out", out}, more...)
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
		out  string // must not exist afterwards ("" for none)
	}{
		{"tampered CSR", issue("tampered.csr", "server", "t.pem"), 1, "signature", "t.pem"},
		{"not a CSR", issue("cert.csr", "server", "c.pem"), 1, "want CERTIFICATE REQUEST", "c.pem"},
		{"missing CSR", issue("none.csr", "server", "n.pem"), 1, "none.csr", "n.pem"},
		{"server certificate without a server name", issue("client.csr", "server", "s.pem"), 1, "needs at least one DNS name or IP address", "s.pem"},
		{"unknown usage", issue("gw.csr", "both", "u.pem"), 2, "--usage must be server or client", "u.pem"},
		{"no usage", issue("gw.csr", "", "u.pem"), 2, "--usage", "u.pem"},
		{"existing out", issue("gw.csr", "server", "exists.pem"), 1, "exists (use --force", ""},
		{"bad validity", issue("gw.csr", "server", "v.pem", "--validity", "-3d"), 2, "--validity", "v.pem"},
		{"validity too long", issue("gw.csr", "server", "v.pem", "--validity", "4000d"), 1, "outside", "v.pem"},
		{"key of another kind under the label", []string{"tls", "request", "--softhsm-dir", w.softhsm, "--token", "setpay-gateway",
			"--label", "rsa-key", "--name", "localhost", "--out", "rsa.csr"}, 1, "a TLS key must be ecdsa-p256", "rsa.csr"},
		{"bad name", []string{"tls", "request", "--softhsm-dir", w.softhsm, "--token", "setpay-gateway",
			"--label", "x", "--name", "bad name!", "--out", "x.csr"}, 2, "--name", "x.csr"},
		{"party name not first", []string{"tls", "request", "--softhsm-dir", w.softhsm, "--token", "setpay-gateway",
			"--label", "x", "--name", "localhost,merchant:shop-1", "--out", "x.csr"}, 2, "--name", "x.csr"},
		{"no name", []string{"tls", "request", "--softhsm-dir", w.softhsm, "--token", "setpay-gateway",
			"--label", "x", "--out", "x.csr"}, 2, "--name: required", "x.csr"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runSetpay(t, w.dir, nil, tc.args...)
			assert.Equal(t, tc.code, r.code, "%s", r)
			assert.Contains(t, r.stderr, tc.want)
			assert.NotContains(t, r.stderr, "panic:")
			if tc.out != "" {
				assert.NoFileExists(t, w.path(tc.out))
			}
		})
	}
	assert.Equal(t, "keep me\n", mustReadFile(t, w.path("exists.pem")), "an existing --out is left alone")
	w.run(issue("gw.csr", "server", "exists.pem", "--force")...)
	assert.Len(t, readChainFile(t, w.path("exists.pem")), 2, "--force replaces it")
}

func mustReadFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func pubEq(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
