package main

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/softhsm"
)

// registeredWorld is a caWorld with its CA serving and a gateway (gw-1) and a
// merchant (shop-1) registered into ./var/gateway and ./var/merchant, all through
// the built binary.
type registeredWorld struct {
	caWorld
	caAddr string
}

func newRegisteredWorld(t *testing.T, beforeRegister func(w caWorld)) registeredWorld {
	t.Helper()
	w := registeredWorld{caWorld: newCAWorld(t)}
	ctx, cancel := context.WithCancel(context.Background())
	serve := setpayCmd(ctx, t, w.dir, nil, "ca", "serve", "--softhsm-dir", w.softhsm, "--listen", "127.0.0.1:0")
	var serveErr lockedBuffer
	serve.Stderr = &serveErr
	t.Cleanup(func() {
		cancel()
		_ = serve.Wait()
		if t.Failed() {
			t.Logf("ca serve stderr:\n%s", serveErr.String())
		}
	})
	w.caAddr = startServer(t, serve, 30*time.Second)
	if beforeRegister != nil {
		beforeRegister(w.caWorld)
	}
	for _, p := range []struct{ role, id, token string }{{"gateway", "gw-1", "setpay-gateway"}, {"merchant", "shop-1", "setpay-merchant"}} {
		w.run("ca", "enroll", "--softhsm-dir", w.softhsm, "--role", p.role, "--id", p.id, "--out", p.id+".secret")
		w.run(p.role, "register", "--ca", w.caAddr, "--id", p.id, "--secret-file", p.id+".secret",
			"--softhsm-dir", w.softhsm, "--token", p.token, "--dir", "./var/"+p.role)
	}
	return w
}

// softhsmEnv is the services' environment: no SOFTHSM2_CONF, as softhsm_dir in the
// configuration register wrote names the token directory.
func (w registeredWorld) softhsmEnv() []string { return []string{"SOFTHSM2_CONF"} }

// makeGatewayServable does what the written gateway.yaml asks of the operator: the
// TLS key and certificate, the PAN-hash key, the store, and a listen address.
func (w registeredWorld) makeGatewayServable(t *testing.T) {
	t.Helper()
	w.run("tls", "request", "--softhsm-dir", w.softhsm, "--token", "setpay-gateway", "--label", "gateway-gw-1-tls",
		"--name", "127.0.0.1", "--out", "var/gateway/gateway-gw-1-tls.csr")
	w.run("ca", "tls-issue", "--ca-dir", w.caDir, "--softhsm-dir", w.softhsm, "--csr", "var/gateway/gateway-gw-1-tls.csr",
		"--usage", "server", "--out", "var/gateway/tls.pem")
	w.run("hsm", "keygen", "--softhsm-dir", w.softhsm, "--token", "setpay-gateway", "--alg", "hmac-sha256", "--usage", "mac", "--label", "pan-hash")
	w.run("store", "init", "--store", "sqlite:var/gateway/gateway.db")
	cfg := mustReadFile(t, w.path("var/gateway/gateway.yaml"))
	require.Contains(t, cfg, "\nlisten: \"\"\n")
	cfg = strings.Replace(cfg, "\nlisten: \"\"\n", "\nlisten: \"127.0.0.1:0\"\n", 1)
	require.NoError(t, os.WriteFile(w.path("var/gateway/gateway.yaml"), []byte(cfg), 0o600))
}

// gatewayVariant writes var/gateway/<name>.yaml: gateway.yaml with each old text
// replaced by its new one (so paths stay relative to the gateway's directory).
func (w registeredWorld) gatewayVariant(t *testing.T, name string, edits ...string) string {
	t.Helper()
	cfg := mustReadFile(t, w.path("var/gateway/gateway.yaml"))
	for i := 0; i+1 < len(edits); i += 2 {
		require.Contains(t, cfg, edits[i])
		cfg = strings.Replace(cfg, edits[i], edits[i+1], 1)
	}
	p := w.path("var/gateway/" + name + ".yaml")
	require.NoError(t, os.WriteFile(p, []byte(cfg), 0o600))
	return p
}

// serveGateway starts `gateway serve` on cfg, stops it with SIGTERM (exit 0) and
// returns its stderr.
func (w registeredWorld) serveGateway(t *testing.T, cfg string) string {
	t.Helper()
	return w.serve(t, "gateway", cfg)
}

// serve starts `<role> serve` on cfg, stops it with SIGTERM (exit 0) and returns its
// stderr.
func (w registeredWorld) serve(t *testing.T, role, cfg string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := setpayCmd(ctx, t, w.dir, w.softhsmEnv(), role, "serve", "--config", cfg)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	addr := startServer(t, cmd, 60*time.Second)
	assert.NotEmpty(t, addr)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, cmd.Wait(), "%s serve stops cleanly\n%s", role, stderr.String())
	return stderr.String()
}

func certsOfRole(t *testing.T, certs []*x509.Certificate) []pki.Role {
	t.Helper()
	var out []pki.Role
	for _, c := range certs {
		r, err := pki.RoleOf(c)
		require.NoError(t, err)
		out = append(out, r)
	}
	return out
}

// TestRegisterWritesChainsAndAServableConfig (issue 11 item 4): register writes the
// signature and key-exchange certificates as full chains (leaf, issuing CA, brand),
// every CA certificate, the CRLs fetched from the CA, and a <party>.yaml that `gateway
// serve` accepts once the TLS files, the PAN-hash key, the store and the listen
// address exist; an existing configuration is never overwritten.
func TestRegisterWritesChainsAndAServableConfig(t *testing.T) {
	w := newRegisteredWorld(t, func(w caWorld) {
		require.NoError(t, os.MkdirAll(w.path("var/merchant"), 0o700))
		require.NoError(t, os.WriteFile(w.path("var/merchant/merchant.yaml"), []byte("# the operator's own\n"), 0o600))
	})
	for _, p := range []struct {
		role   string
		leaf   pki.Role
		issuer pki.Role
	}{{"gateway", pki.RoleGateway, pki.RolePCA}, {"merchant", pki.RoleMerchant, pki.RoleMCA}} {
		dir := "var/" + p.role + "/"
		for _, f := range []string{"signature.pem", "keyexchange.pem"} {
			assert.Equal(t, []pki.Role{p.leaf, p.issuer, pki.RoleBrand}, certsOfRole(t, readChainFile(t, w.path(dir+f))), "%s%s: leaf, issuing CA, brand", dir, f)
		}
		assert.ElementsMatch(t, []pki.Role{pki.RoleBrand, pki.RoleCCA, pki.RoleMCA, pki.RolePCA}, certsOfRole(t, readChainFile(t, w.path(dir+"ca-chain.pem"))))
		assert.Equal(t, []pki.Role{pki.RoleRoot}, certsOfRole(t, readChainFile(t, w.path(dir+"root.pem"))))
		assert.Len(t, readChainFile(t, w.path(dir+"tls-ca.pem")), 1)
		crls := pki.NewMemoryCRLs()
		require.NoError(t, loadCRLs(crls, w.path(dir+"crls.pem")))
		assert.Equal(t, 5, strings.Count(mustReadFile(t, w.path(dir+"crls.pem")), "BEGIN X509 CRL"), "root, brand, CCA, MCA and PCA CRLs")
	}

	// gateway.yaml is a valid configuration apart from what register cannot know.
	text := mustReadFile(t, w.path("var/gateway/gateway.yaml"))
	for _, s := range []string{"TODO", "setpay tls request", "setpay ca tls-issue", "--usage server", "setpay store init", "hsm keygen"} {
		assert.Contains(t, text, s)
	}
	gc := readConfig[gatewayConfig](t, w.path("var/gateway/gateway.yaml"))
	assert.Equal(t, "setpay-gateway", gc.Token)
	assert.Equal(t, "../softhsm", gc.SoftHSMDir, "the token directory, relative to the configuration")
	assert.Empty(t, gc.PINSource, "the PIN file of softhsm_dir")
	assert.Contains(t, gc.SignKey, "object=gateway-gw-1-sig")
	assert.Contains(t, gc.KXKey, "object=gateway-gw-1-kx")
	assert.Equal(t, "signature.pem", gc.SignCert)
	assert.Equal(t, "keyexchange.pem", gc.KXCert)
	assert.Equal(t, "root.pem", gc.Root)
	assert.Equal(t, []string{"ca-chain.pem"}, gc.CAChain)
	assert.Equal(t, []string{"crls.pem"}, gc.CRLs)
	assert.Equal(t, "sqlite:gateway.db", gc.Store)
	assert.Equal(t, "tls-ca.pem", gc.TLS.ClientCA)
	assert.Equal(t, w.caAddr, gc.CRLCA.Address, "CRLs are fetched from the CA registered with")
	assert.Equal(t, "tls-ca.pem", gc.CRLCA.TLSCA)
	assert.Empty(t, gc.Listen)
	var before gatewayConfig
	err := loadConfig(w.path("var/gateway/gateway.yaml"), &before)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "listen: required", "what is left to fill in is named")

	// The merchant's own merchant.yaml stays; the new one is next to it.
	assert.Equal(t, "# the operator's own\n", mustReadFile(t, w.path("var/merchant/merchant.yaml")))
	mc := readConfig[merchantConfig](t, w.path("var/merchant/merchant.yaml.new"))
	assert.Equal(t, "SETPay", mc.Brand)
	assert.Equal(t, "pkcs11:token=setpay-merchant;object=merchant-challenge;type=secret-key", mc.ChallengeKey)
	assert.Equal(t, "tls-ca.pem", mc.Gateway.TLSCA)
	assert.Contains(t, mc.Gateway.ClientKey, "object=merchant-shop-1-client-tls")
	assert.Contains(t, mustReadFile(t, w.path("var/merchant/merchant.yaml.new")), "kx_cert: \"\"")

	w.makeGatewayServable(t)
	stderr := w.serveGateway(t, w.path("var/gateway/gateway.yaml"))
	assert.NotContains(t, stderr, "expires soon")

	t.Run("merchant.yaml serves once filled in", func(t *testing.T) {
		// What merchant.yaml's comments ask for: TLS server and client certificates,
		// the challenge key, the store; then listen, offers and the gateway's fields.
		tok := []string{"--softhsm-dir", w.softhsm, "--token", "setpay-merchant"}
		w.run(append([]string{"tls", "request", "--label", "merchant-shop-1-tls", "--name", "127.0.0.1", "--out", "var/merchant/merchant-shop-1-tls.csr"}, tok...)...)
		w.run("ca", "tls-issue", "--ca-dir", w.caDir, "--softhsm-dir", w.softhsm, "--csr", "var/merchant/merchant-shop-1-tls.csr", "--usage", "server", "--out", "var/merchant/tls.pem")
		w.run(append([]string{"tls", "request", "--label", "merchant-shop-1-client-tls", "--name", "merchant:shop-1", "--out", "var/merchant/client.csr"}, tok...)...)
		w.run("ca", "tls-issue", "--ca-dir", w.caDir, "--softhsm-dir", w.softhsm, "--csr", "var/merchant/client.csr", "--usage", "client", "--out", "var/merchant/client-tls.pem")
		w.run(append([]string{"hsm", "keygen", "--alg", "hmac-sha256", "--usage", "mac", "--label", "merchant-challenge"}, tok...)...)
		w.run("store", "init", "--store", "sqlite:var/merchant/merchant.db")
		cfg := mustReadFile(t, w.path("var/merchant/merchant.yaml.new"))
		for _, e := range [][2]string{
			{"\nlisten: \"\"\n", "\nlisten: \"127.0.0.1:0\"\n"},
			{"\noffers: []\n", "\noffers:\n  - {id: book, description: \"A book\", amount: 1999, currency: EUR}\n"},
			{"\n  address: \"\"\n", "\n  address: \"127.0.0.1:7501\"\n"},
			{"\n  server_name: \"\"\n", "\n  server_name: \"127.0.0.1\"\n"},
			{"\n  kx_cert: \"\"\n", "\n  kx_cert: ../gateway/keyexchange.pem\n"},
		} {
			require.Contains(t, cfg, e[0])
			cfg = strings.Replace(cfg, e[0], e[1], 1)
		}
		p := w.path("var/merchant/filled.yaml")
		require.NoError(t, os.WriteFile(p, []byte(cfg), 0o600))
		w.serve(t, "merchant", p)
	})

	t.Run("trust files are checked before the secret is spent", func(t *testing.T) {
		w.run("ca", "enroll", "--softhsm-dir", w.softhsm, "--role", "gateway", "--id", "gw-3", "--out", "gw-3.secret")
		args := []string{"gateway", "register", "--ca", w.caAddr, "--id", "gw-3", "--secret-file", "gw-3.secret",
			"--softhsm-dir", w.softhsm, "--token", "setpay-gateway", "--dir", "./var/gateway-3"}
		r := runSetpay(t, w.dir, nil, append(args, "--ca-chain", "no-such-chain.pem")...)
		assert.Equal(t, 1, r.code, "%s", r)
		assert.Contains(t, r.stderr, "--ca-chain")
		assert.Contains(t, r.stderr, "no-such-chain.pem")
		assert.NoDirExists(t, w.path("var/gateway-3"), "nothing written")
		r = runSetpay(t, w.dir, nil, append(args, "--ca-chain", "var/ca/root.pem")...)
		assert.Equal(t, 1, r.code, "%s", r)
		assert.Contains(t, r.stderr, "no brand certificate")
		w.run(args...) // the secret was not spent
		assert.FileExists(t, w.path("var/gateway-3/gateway.yaml"))
	})

	t.Run("real HSM flags: module, token and pin_source as given", func(t *testing.T) {
		pin := strings.TrimSpace(mustReadFile(t, w.path("var/softhsm/user-pin")))
		env := []string{"SOFTHSM2_CONF=" + w.path("var/softhsm/softhsm2.conf"), "SETPAY_TEST_GW_PIN=" + pin}
		w.run("ca", "enroll", "--softhsm-dir", w.softhsm, "--role", "gateway", "--id", "gw-2", "--out", "gw-2.secret")
		r := runSetpay(t, w.dir, env, "gateway", "register", "--ca", w.caAddr, "--id", "gw-2", "--secret-file", "gw-2.secret",
			"--module", softhsmModule(t), "--token", "setpay-gateway", "--pin-source", "env:SETPAY_TEST_GW_PIN", "--dir", "./var/gateway-2")
		require.Zero(t, r.code, "%s", r)
		c := readConfig[gatewayConfig](t, w.path("var/gateway-2/gateway.yaml"))
		assert.Equal(t, softhsmModule(t), c.Module)
		assert.Equal(t, "setpay-gateway", c.Token)
		assert.Equal(t, "env:SETPAY_TEST_GW_PIN", c.PINSource, "the source as given, never the PIN")
		assert.Empty(t, c.SoftHSMDir)
		assert.NotContains(t, mustReadFile(t, w.path("var/gateway-2/gateway.yaml")), pin)
	})
}

func softhsmModule(t *testing.T) string {
	t.Helper()
	p, err := softhsm.FindModule()
	require.NoError(t, err)
	return p
}

// TestServeRefusesABadOwnIdentity (issue 11 item 4): `gateway serve` checks its own
// certificates at start and refuses, exit 1, naming the field and the reason: a
// merchant's certificate (and `merchant serve` a gateway's), a leaf-only or misordered
// file, a certificate not for the token key, an expired or not yet valid certificate,
// and (after `ca revoke`, through crl_ca) a revoked one. A certificate close to its end
// only warns.
func TestServeRefusesABadOwnIdentity(t *testing.T) {
	w := newRegisteredWorld(t, nil)
	w.makeGatewayServable(t)
	gwDir := w.path("var/gateway")
	sig := readChainFile(t, filepath.Join(gwDir, "signature.pem"))
	kx := readChainFile(t, filepath.Join(gwDir, "keyexchange.pem"))
	require.NoError(t, os.WriteFile(filepath.Join(gwDir, "leaf-only.pem"), pki.EncodePEM(sig[0]), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(gwDir, "wrong-order.pem"), pki.EncodePEM(sig[0], sig[2], sig[1]), 0o644))

	// Certificates for the gateway's own keys from the PCA in its token, one already
	// expired and one ending within the warning period: the CA's clock is set for them.
	caTok := w.openToken(t, "setpay-ca")
	issueAt := func(at time.Time, validity time.Duration, name string) {
		t.Helper()
		l, err := ca.LoadDir(context.Background(), ca.LoadConfig{Dir: w.path(w.caDir), Token: caTok, Clock: func() time.Time { return at }})
		require.NoError(t, err)
		sigKey, err := x509.MarshalPKIXPublicKey(sig[0].PublicKey)
		require.NoError(t, err)
		kxKey, err := x509.MarshalPKIXPublicKey(kx[0].PublicKey)
		require.NoError(t, err)
		ec, err := l.Hierarchy.PCA.IssueAccepted(context.Background(), ca.AcceptedEntity{Role: pki.RoleGateway, ID: "gw-1",
			SignatureKey: sigKey, KeyExchangeKey: kxKey, Validity: validity})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(gwDir, name+"-sign.pem"), pki.EncodePEM(append([]*x509.Certificate{ec.Signature}, sig[1:]...)...), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(gwDir, name+"-kx.pem"), pki.EncodePEM(append([]*x509.Certificate{ec.KeyExchange}, kx[1:]...)...), 0o644))
	}
	issueAt(time.Now().Add(-3*time.Minute), time.Minute, "expired")
	issueAt(time.Now(), 7*24*time.Hour, "soon")
	issueAt(time.Now().Add(time.Hour), 24*time.Hour, "future")

	tlsKey := "pkcs11:token=setpay-gateway;object=gateway-gw-1-tls;type=private"
	gwCfg := mustReadFile(t, filepath.Join(gwDir, "gateway.yaml"))
	signKeyLine := gwCfg[strings.Index(gwCfg, "\nsign_key: ")+1:]
	signKeyLine = signKeyLine[:strings.Index(signKeyLine, "\n")]
	cases := []struct {
		name  string
		edits []string
		want  []string
	}{
		{"merchant certificate in the gateway's configuration", []string{`sign_cert: signature.pem`, `sign_cert: "../merchant/signature.pem"`},
			[]string{"sign_cert: wrong role", "merchant", "this service is the gateway"}},
		{"merchant key-exchange certificate", []string{`kx_cert: keyexchange.pem`, `kx_cert: "../merchant/keyexchange.pem"`},
			[]string{"kx_cert: wrong role", "merchant"}},
		{"leaf-only certificate file", []string{`sign_cert: signature.pem`, `sign_cert: "leaf-only.pem"`},
			[]string{"sign_cert: holds only the leaf certificate"}},
		{"chain out of order", []string{`sign_cert: signature.pem`, `sign_cert: "wrong-order.pem"`},
			[]string{"sign_cert: the second certificate", "is not the issuer"}},
		{"certificate not for the token key", []string{signKeyLine, `sign_key: "` + tlsKey + `"`},
			[]string{"sign_cert: key mismatch", "sign_key"}},
		{"expired certificate", []string{`sign_cert: signature.pem`, `sign_cert: "expired-sign.pem"`},
			[]string{"sign_cert: expired"}},
		{"certificate not yet valid", []string{`sign_cert: signature.pem`, `sign_cert: future-sign.pem`},
			[]string{"sign_cert: not yet valid"}},
		{"expired key-exchange certificate", []string{`kx_cert: keyexchange.pem`, `kx_cert: "expired-kx.pem"`},
			[]string{"kx_cert: expired"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := w.gatewayVariant(t, "case"+string(rune('a'+i)), tc.edits...)
			r := runSetpay(t, w.dir, w.softhsmEnv(), "gateway", "serve", "--config", cfg)
			assert.Equal(t, 1, r.code, "%s", r)
			assert.NotContains(t, r.stderr, "panic:")
			assert.NotContains(t, r.stdout, "listening on")
			for _, s := range tc.want {
				assert.Contains(t, r.stderr, s)
			}
		})
	}

	t.Run("gateway certificate in the merchant's configuration", func(t *testing.T) {
		cfg := mustReadFile(t, w.path("var/merchant/merchant.yaml"))
		for _, e := range [][2]string{
			{"\nlisten: \"\"\n", "\nlisten: \"127.0.0.1:0\"\n"},
			{"\n  address: \"\"\n", "\n  address: \"127.0.0.1:7501\"\n"},
			{"\n  kx_cert: \"\"\n", "\n  kx_cert: ../gateway/keyexchange.pem\n"},
			{"\nsign_cert: signature.pem\n", "\nsign_cert: ../gateway/signature.pem\n"},
		} {
			require.Contains(t, cfg, e[0])
			cfg = strings.Replace(cfg, e[0], e[1], 1)
		}
		p := w.path("var/merchant/wrong-role.yaml")
		require.NoError(t, os.WriteFile(p, []byte(cfg), 0o600))
		r := runSetpay(t, w.dir, w.softhsmEnv(), "merchant", "serve", "--config", p)
		assert.Equal(t, 1, r.code, "%s", r)
		assert.NotContains(t, r.stderr, "panic:")
		assert.Contains(t, r.stderr, "sign_cert: wrong role")
		assert.Contains(t, r.stderr, "this service is the merchant")
	})

	t.Run("certificate ending soon warns and serves", func(t *testing.T) {
		cfg := w.gatewayVariant(t, "soon", `sign_cert: signature.pem`, `sign_cert: "soon-sign.pem"`)
		assert.Contains(t, w.serveGateway(t, cfg), "certificate expires soon")
	})

	t.Run("revoked certificate", func(t *testing.T) {
		w.run("ca", "revoke", "--softhsm-dir", w.softhsm, "--serial", sig[0].SerialNumber.Text(16), "--reason", "keyCompromise")
		// The configuration register wrote asks the CA service (crl_ca) for its CRLs at start.
		r := runSetpay(t, w.dir, w.softhsmEnv(), "gateway", "serve", "--config", w.path("var/gateway/gateway.yaml"))
		assert.Equal(t, 1, r.code, "%s", r)
		assert.NotContains(t, r.stderr, "panic:")
		assert.Contains(t, r.stderr, "sign_cert: revoked")
	})
}
