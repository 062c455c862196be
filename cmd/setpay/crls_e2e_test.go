package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/gateway"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/softhsm"
)

// crlSystem is a SET system of separate processes built with the binary as an
// operator builds it (docs/pki.md): SoftHSM tokens, `ca init`, a running `ca serve`,
// a registered gateway and a registered cardholder wallet. TLS certificates for the
// gateway and merchants are issued here, with their keys made in the parties'
// tokens, by a TLS CA whose key is in the CA token.
type crlSystem struct {
	t         *testing.T
	dir       string
	caAddr    string
	env       []string // SOFTHSM2_CONF for the services
	module    string
	pin       string // pin_source of every token
	tokens    map[string]*hsm.Token
	tlsCA     *tlsrpc.TLSIssuer
	gwPAN     string // pan_hash_key URI
	caLog     *lockedBuffer
	caMetrics string
	walletP   string // passphrase file
}

const crlTestPAN = "4111111111111111"

func newCRLSystem(t *testing.T) *crlSystem {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a CA, a gateway and merchants as processes; skipped with -short")
	}
	dir := t.TempDir()
	s := &crlSystem{t: t, dir: dir, tokens: map[string]*hsm.Token{}, caLog: &lockedBuffer{}}
	c := cli{t: t, dir: dir}
	c.run("hsm", "init-softhsm", "--softhsm-dir", "./var/softhsm", "--tokens", "setpay-root,setpay-ca,setpay-gateway,setpay-merchant")
	c.run("ca", "init", "--softhsm-dir", "./var/softhsm", "--ca-dir", "./var/ca", "--store", "sqlite:./var/ca.db")

	ctx, cancel := context.WithCancel(context.Background())
	serve := setpayCmd(ctx, t, dir, []string{"SETPAY_LOG_LEVEL=info"}, "ca", "serve", "--softhsm-dir", "./var/softhsm", "--listen", "127.0.0.1:0",
		"--metrics-listen", "127.0.0.1:0", "--crl-check", "1h") // an hour: the files change only by `ca revoke` here
	serve.Stderr = s.caLog
	t.Cleanup(func() {
		cancel()
		_ = serve.Wait()
		if t.Failed() {
			t.Logf("ca serve stderr:\n%s", s.caLog.String())
		}
	})
	s.caAddr, s.caMetrics = startServerAddrs(t, serve, 30*time.Second)
	require.NotEmpty(t, s.caMetrics, "ca serve announces its metrics address")

	// The test opens the same tokens to make the TLS keys and the PAN hash key, as
	// `setpay hsm keygen` would.
	d := softhsm.Dir{Root: filepath.Join(dir, "var", "softhsm")}
	t.Setenv("SOFTHSM2_CONF", d.ConfPath())
	s.env = []string{"SOFTHSM2_CONF=" + d.ConfPath(), "SETPAY_LOG_LEVEL=info"}
	var err error
	s.module, err = softhsm.FindModule()
	require.NoError(t, err)
	mod, err := hsm.OpenModule(s.module, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { _ = mod.Close() })
	s.pin = "file:" + d.PINFile()
	for _, label := range []string{"setpay-ca", "setpay-gateway", "setpay-merchant"} {
		tok, err := mod.OpenToken(context.Background(), hsm.TokenConfig{Selector: hsm.Selector{Label: label}, PIN: hsm.PINSource(s.pin)})
		require.NoError(t, err)
		t.Cleanup(func() { _ = tok.Close() })
		s.tokens[label] = tok
	}
	tlsKey := s.key("setpay-ca", "test-services-tls-ca")
	s.tlsCA, err = tlsrpc.NewTLSIssuer("services TLS CA", tlsKey, 24*time.Hour)
	require.NoError(t, err)
	s.write("tls-ca.pem", pki.EncodePEM(s.tlsCA.Certificate()))
	pan, err := s.tokens["setpay-gateway"].GenerateSecretKey(context.Background(), hsm.KeySpec{Label: "pan-hash", Algorithm: hsm.HMACSHA256, Usage: hsm.UsageMAC})
	require.NoError(t, err)
	s.gwPAN = pan.URI()

	s.register("gateway", "gw-1", "setpay-gateway")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "card.yaml"), []byte("pan: \""+crlTestPAN+"\"\nexpiry: \"203012\"\npostal_code: \"75001\"\ncardholder_name: \"Alice Example\"\n"), 0o600))
	s.walletP = filepath.Join(dir, "wallet.pass")
	require.NoError(t, os.WriteFile(s.walletP, []byte("correct horse battery staple\n"), 0o600))
	c.run("wallet", "register", "--ca", s.caAddr, "--card-file", "card.yaml", "--passphrase-file", "wallet.pass", "--wallet", "./var/wallet")
	return s
}

// key makes (or finds) an ECDSA signing key in a token.
func (s *crlSystem) key(token, label string) *hsm.Key {
	s.t.Helper()
	tok := s.tokens[token]
	if k, err := tok.FindKey(context.Background(), label); err == nil {
		return k
	}
	k, err := tok.GenerateKey(context.Background(), hsm.KeySpec{Label: label, Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(s.t, err)
	return k
}

func (s *crlSystem) write(name string, b []byte) string {
	s.t.Helper()
	p := filepath.Join(s.dir, name)
	require.NoError(s.t, os.WriteFile(p, b, 0o600))
	return p
}

func (s *crlSystem) run(args ...string) string {
	s.t.Helper()
	return cli{t: s.t, dir: s.dir}.run(args...)
}

// register enrolls and registers a gateway or merchant with the CA service; its
// certificates land in var/<id>.
func (s *crlSystem) register(role, id, token string) {
	s.t.Helper()
	secret := s.run("ca", "enroll", "--softhsm-dir", "./var/softhsm", "--role", role, "--id", id)
	s.write(id+".secret", []byte(secret))
	s.run(role, "register", "--ca", s.caAddr, "--id", id, "--secret-file", id+".secret",
		"--softhsm-dir", "./var/softhsm", "--token", token, "--dir", "./var/"+id)
}

// chain writes a party's certificate followed by its issuing CA and the brand.
func (s *crlSystem) chain(id, file, issuer string) string {
	s.t.Helper()
	leaf, err := readPEMCerts(filepath.Join(s.dir, "var", id, file))
	require.NoError(s.t, err)
	var b []byte
	b = append(b, pki.EncodePEM(leaf[0])...)
	for _, f := range []string{issuer + ".pem", "brand.pem"} {
		c, err := os.ReadFile(filepath.Join(s.dir, "var", "ca", f))
		require.NoError(s.t, err)
		b = append(b, c...)
	}
	return s.write(id+"-"+file, b)
}

// tlsCert issues a TLS certificate for a key made in the token and writes its chain:
// a server certificate for 127.0.0.1, or a client certificate naming client (the
// gateway wants "merchant:<id>").
func (s *crlSystem) tlsCert(token, label, client string) (path, keyURI string) {
	s.t.Helper()
	k := s.key(token, label)
	var id tlsrpc.Identity
	var err error
	if client != "" {
		id, err = s.tlsCA.IssueClient(client, k, 24*time.Hour)
	} else {
		id, err = s.tlsCA.IssueServer("127.0.0.1", k, 24*time.Hour)
	}
	require.NoError(s.t, err)
	return s.write(label+".pem", pki.EncodePEM(append([]*x509.Certificate{id.Cert}, id.Chain...)...)), k.URI()
}

// party is the configuration every party shares; crl is the case's CRL source.
func (s *crlSystem) party(role, id, token, issuer string, crl func(*partyConfig)) partyConfig {
	s.t.Helper()
	var p partyConfig
	p.Module, p.Token, p.PINSource, p.Listen = s.module, token, s.pin, "127.0.0.1:0"
	// The labels `register` gives the keys it makes.
	sig, err := s.tokens[token].FindKey(context.Background(), role+"-"+id+"-sig")
	require.NoError(s.t, err)
	p.SignKey = sig.URI()
	kx, err := s.tokens[token].FindKey(context.Background(), role+"-"+id+"-kx")
	require.NoError(s.t, err)
	p.KXKey = kx.URI()
	p.SignCert, p.KXCert = s.chain(id, "signature.pem", issuer), s.chain(id, "keyexchange.pem", issuer)
	ca := filepath.Join(s.dir, "var", "ca")
	p.Root, p.CAChain = filepath.Join(ca, "root.pem"), []string{filepath.Join(ca, "chain.pem")}
	p.CRLRefresh = "1s"
	p.Store = "sqlite:" + filepath.Join(s.dir, id+".db")
	s.run("store", "init", "--store", p.Store)
	p.TLS.Cert, p.TLS.Key = s.tlsCert(token, id+"-tls", "")
	p.MetricsListen = "127.0.0.1:0"
	crl(&p)
	return p
}

// start runs a service from its configuration and returns its address and stderr.
func (s *crlSystem) start(ctx context.Context, role string, cfg any) (string, *lockedBuffer) {
	s.t.Helper()
	path := filepath.Join(s.dir, fmt.Sprintf("%s-%d.yaml", role, time.Now().UnixNano()))
	writeConfig(s.t, path, cfg)
	cmd := setpayCmd(ctx, s.t, s.dir, s.env, role, "serve", "--config", path)
	logs := &lockedBuffer{}
	cmd.Stderr = logs
	s.t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if s.t.Failed() {
			s.t.Logf("%s serve stderr:\n%s", role, logs.String())
		}
	})
	addr, _ := startServerAddrs(s.t, cmd, 30*time.Second)
	return addr, logs
}

// TestRunningGatewayRefusesRevokedMerchant is issue 11 item 7 end to end, every party
// its own process: a running gateway that refreshes its CRLs every second — from the
// CA service (crl_ca) in one case, from the CRL files of the CA directory (crls) in
// the other — approves a merchant's purchase; `setpay ca revoke` of the merchant's
// signature certificate; within the refresh interval the same gateway process refuses
// the merchant's next authorization as revoked, and the merchant relays that reason
// to the cardholder. In the crl_ca case, the offline root's CRL re-signed by
// `ca crl --issuer root` while the CA runs reaches the same gateway through GetCRL.
func TestRunningGatewayRefusesRevokedMerchant(t *testing.T) {
	s := newCRLSystem(t)
	caDir := filepath.Join(s.dir, "var", "ca")
	// The CA says when each published CRL expires, and that the root's cannot be
	// re-signed by this process.
	resp, err := http.Get("http://" + s.caMetrics + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, err)
	assert.Regexp(t, `setpay_ca_crl_next_update_timestamp_seconds\{ca="root",online="false"\} [0-9.e+]+`, string(body))
	assert.Regexp(t, `setpay_ca_crl_next_update_timestamp_seconds\{ca="mca",online="true"\} [0-9.e+]+`, string(body))
	for _, tc := range []struct {
		name string
		crl  func(*partyConfig)
	}{
		{"crl_ca", func(p *partyConfig) {
			p.CRLCA = crlCAConfig{Address: s.caAddr, TLSCA: filepath.Join(caDir, "tls-ca.pem"), ServerName: "127.0.0.1"}
		}},
		{"crls files", func(p *partyConfig) { p.CRLs = []string{filepath.Join(caDir, "crls.pem")} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.t = t
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			shop := "shop-" + strings.ReplaceAll(tc.name, " ", "-")
			s.register("merchant", shop, "setpay-merchant")

			gw := gatewayConfig{partyConfig: s.party("gateway", "gw-1", "setpay-gateway", "pca", tc.crl), PANHashKey: s.gwPAN,
				Ledger: []gateway.Card{{PAN: crlTestPAN, Expiry: "203012", Currency: "EUR", Balance: 1000_00}}}
			gw.Store = "sqlite:" + filepath.Join(s.dir, "gw-"+shop+".db")
			s.run("store", "init", "--store", gw.Store)
			gw.TLS.ClientCA = filepath.Join(s.dir, "tls-ca.pem")
			gwAddr, gwLog := s.start(ctx, "gateway", gw)

			m := merchantConfig{partyConfig: s.party("merchant", shop, "setpay-merchant", "mca", tc.crl), Brand: "SETPay",
				Offers: []merchant.Offer{{ID: "book", Description: "a book", Amount: 12_50, Currency: "EUR"}}}
			m.Gateway.Address, m.Gateway.ServerName = gwAddr, "127.0.0.1"
			m.Gateway.KXCert, m.Gateway.TLSCA = s.chain("gw-1", "keyexchange.pem", "pca"), filepath.Join(s.dir, "tls-ca.pem")
			m.Gateway.ClientCert, m.Gateway.ClientKey = s.tlsCert("setpay-merchant", shop+"-client-tls", "merchant:"+shop)
			// The merchant's challenge key, a MAC key in its token (merchant serve requires one).
			ck, err := s.tokens["setpay-merchant"].GenerateSecretKey(ctx, hsm.KeySpec{Label: shop + "-challenge", Algorithm: hsm.HMACSHA256, Usage: hsm.UsageMAC})
			require.NoError(t, err)
			m.ChallengeKey = ck.URI()
			mAddr, mLog := s.start(ctx, "merchant", m)

			// The cardholder keeps the CRLs of before the revocation: what is tested is
			// the gateway's refusal, relayed by the merchant.
			crls, err := os.ReadFile(filepath.Join(caDir, "crls.pem"))
			require.NoError(t, err)
			walletCRLs := s.write("wallet-crls-"+shop+".pem", crls)
			buy := func() result {
				return runSetpay(t, s.dir, nil, "wallet", "buy", "--wallet", "./var/wallet", "--passphrase-file", s.walletP,
					"--merchant", mAddr, "--merchant-ca", filepath.Join(s.dir, "tls-ca.pem"), "--crls", walletCRLs, "--offer", "book")
			}
			first := buy()
			require.Zero(t, first.code, "purchase before the revocation\n%s\ngateway:\n%s\nmerchant:\n%s", first, gwLog, mLog)
			assert.Contains(t, first.stdout, ": APPROVED ")

			sig, err := readPEMCerts(filepath.Join(s.dir, "var", shop, "signature.pem"))
			require.NoError(t, err)
			out := s.run("ca", "revoke", "--softhsm-dir", "./var/softhsm", "--serial", sig[0].SerialNumber.Text(16), "--reason", "keyCompromise")
			assert.Contains(t, out, "revoked "+sig[0].SerialNumber.Text(16))

			// Same gateway process, no signal: refused from its next refresh on.
			var last result
			require.Eventually(t, func() bool {
				last = buy()
				return last.code != 0
			}, 30*time.Second, 500*time.Millisecond, "the running gateway kept authorizing a revoked merchant\n%s", last)
			assert.Equal(t, 1, last.code, "%s", last)
			assert.Contains(t, last.stderr, "CERT_REVOKED", "the merchant relays the gateway's SET reason\n%s", last)
			assert.Regexp(t, `msg="CRL updated" issuer="CN=SETPay Merchant CA[^"]*" number=\d+ entries=1 `, gwLog.String(),
				"the running gateway installed the MCA's new CRL")
			assert.Regexp(t, `msg="authorization refused" .*reason=CERT_REVOKED .*`+sig[0].SerialNumber.Text(16), gwLog.String())
			assert.Regexp(t, `msg="purchase refused" .*reason=CERT_REVOKED`, mLog.String(), "the merchant relayed the gateway's reason")

			if tc.name == "crl_ca" {
				// The offline root's CRL, re-signed with the root token while the CA
				// runs, is served by GetCRL at once: the running gateway installs it.
				s.run("ca", "crl", "--softhsm-dir", "./var/softhsm", "--issuer", "root", "--out", "root-new.crl")
				crl, err := readCRL(t, filepath.Join(s.dir, "root-new.crl"))
				require.NoError(t, err)
				require.Eventually(t, func() bool {
					return strings.Contains(gwLog.String(), `msg="CRL updated" issuer="CN=SETPay Root CA,O=SETPay" number=`+crl.Number.String()+` `)
				}, 30*time.Second, 200*time.Millisecond, "the gateway did not get the new root CRL from the running CA")
			}
		})
	}
}

// TestCAYAMLCRLValidity: `ca init` writes crl_validity into ca.yaml with long root and
// brand CRLs; an edited validity is what `ca crl` signs with, and `ca crl` publishes
// the CRL in the CA directory (its file and the bundle crls.pem), the root's too with
// the root token from ca.yaml; a bad validity is refused naming the field.
func TestCAYAMLCRLValidity(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ca init; skipped with -short")
	}
	dir := t.TempDir()
	c := cli{t: t, dir: dir}
	c.run("hsm", "init-softhsm", "--softhsm-dir", "./var/softhsm", "--tokens", "setpay-root,setpay-ca")
	c.run("ca", "init", "--softhsm-dir", "./var/softhsm", "--ca-dir", "./var/ca", "--store", "sqlite:./var/ca.db")
	caDir := filepath.Join(dir, "var", "ca")
	cfgPath := filepath.Join(caDir, caConfigFile)
	fc := readConfig[caFileConfig](t, cfgPath)
	assert.Equal(t, defaultCRLValidity(), fc.CRLValidity, "ca init writes the validities, ready to edit")
	for role, want := range map[string]time.Duration{"root": 30 * 24 * time.Hour, "brand": 7 * 24 * time.Hour, "mca": 24 * time.Hour} {
		crl, err := readCRL(t, filepath.Join(caDir, role+".crl"))
		require.NoError(t, err)
		assert.Equal(t, want, crl.NextUpdate.Sub(crl.ThisUpdate), "%s CRL of ca init", role)
	}

	fc.CRLValidity["mca"], fc.CRLValidity["root"] = "2h", "2160h"
	writeConfig(t, cfgPath, fc)
	for role, want := range map[string]time.Duration{"mca": 2 * time.Hour, "root": 90 * 24 * time.Hour} {
		c.run("ca", "crl", "--softhsm-dir", "./var/softhsm", "--ca-dir", "./var/ca", "--issuer", role, "--out", role+"-new.crl")
		out, err := readCRL(t, filepath.Join(dir, role+"-new.crl"))
		require.NoError(t, err)
		assert.Equal(t, want, out.NextUpdate.Sub(out.ThisUpdate), "%s CRL with crl_validity.%s", role, role)
		published, err := readCRL(t, filepath.Join(caDir, role+".crl"))
		require.NoError(t, err)
		assert.Equal(t, out.Raw, published.Raw, "ca crl publishes %s.crl", role)
		bundle, err := pki.ReadCRLFile(filepath.Join(caDir, "crls.pem"))
		require.NoError(t, err)
		require.Len(t, bundle, 5)
		found := false
		for _, b := range bundle {
			found = found || string(b.Raw) == string(out.Raw)
		}
		assert.True(t, found, "crls.pem carries the new %s CRL", role)
	}

	fc.CRLValidity["mca"], fc.CRLValidity["shop"] = "-1h", "1h"
	writeConfig(t, cfgPath, fc)
	r := runSetpay(t, dir, nil, "ca", "crl", "--softhsm-dir", "./var/softhsm", "--ca-dir", "./var/ca", "--issuer", "mca")
	assert.Equal(t, 1, r.code, "%s", r)
	assert.Contains(t, r.stderr, "crl_validity.mca: want a positive duration")
	assert.Contains(t, r.stderr, "crl_validity.shop: unknown CA")
	assert.NotContains(t, r.stderr, "panic:")
}

func readCRL(t *testing.T, path string) (*x509.RevocationList, error) {
	t.Helper()
	crls, err := pki.ReadCRLFile(path)
	if err != nil {
		return nil, err
	}
	require.Len(t, crls, 1, path)
	return crls[0], nil
}
