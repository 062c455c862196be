//go:build browser

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// webBed is the system a shopper and an operator use, each service a process of the
// built binary started as docs/web.md says, on the demo's tokens and certificates
// (demoFixture) and on fresh stores of the test's own:
//
//	setpay gateway serve --config gateway.yaml
//	setpay wallet ui --wallet wallet-alice ...        (and one for Bob's wallet)
//	setpay merchant console-user --user operator --users-file console-users
//	setpay merchant serve --config merchant.yaml      (with its shop: and console: blocks)
type webBed struct {
	t         *testing.T
	root, dir string
	env       []string // SOFTHSM2_CONF of the demo's tokens
	// storefront and console are the https://ADDR/ the merchant printed; wallets the
	// wallet UIs' http://127.0.0.1:PORT/?token=T by cardholder ("alice", "bob").
	storefront, console string
	wallets             map[string]string
	merchantAddr        string // the merchant's SET (gRPC) address
	// pin is the SPKI pin of the merchant's web TLS key (storefront and console).
	pin string
	// operator's console login.
	operator, password string
}

// newWebBed starts the gateway, a wallet UI for each cardholder named, and the merchant
// with its console and, when a cardholder is named, its storefront linking to the first
// one's wallet UI.
func newWebBed(t *testing.T, cardholders ...string) *webBed {
	t.Helper()
	root := demoFixture(t)
	b := &webBed{t: t, root: root, dir: t.TempDir(), env: []string{"SOFTHSM2_CONF=" + filepath.Join(root, "softhsm", "softhsm2.conf")},
		wallets: map[string]string{}, operator: "operator", password: "correct horse battery staple"}
	dsn := func(name string) string { return newSQLiteStore(t, b.dir, name) }
	gwCfg := writeDemoGatewayConfig(t, root, b.dir)
	gwAddr := b.start("gateway", []string{"listening on "}, "gateway", "serve", "--config", gwCfg)["listening on "]

	for _, name := range cardholders {
		b.wallets[name] = b.start("wallet-"+name, []string{"wallet UI on "}, b.walletUIArgs(name)...)["wallet UI on "]
	}

	// The console's operator, added as docs/web.md says (the password from the
	// environment, never argv).
	users := filepath.Join(b.dir, "console-users")
	r := runSetpay(t, b.dir, append(b.env, "SETPAY_CONSOLE_PASSWORD="+b.password), "merchant", "console-user", "--user", b.operator, "--users-file", users)
	require.Zero(t, r.code, "console-user\n%s", r)

	// merchant.yaml as the demo wrote it, with fresh stores and the web blocks added as
	// an operator adds them. The storefront and console serve with the merchant's TLS
	// certificate and its key in the merchant's token.
	mc := readConfig[merchantConfig](t, filepath.Join(root, "merchant.yaml"))
	// A port of its own, not 0: the storefront's initiations tell wallets where the
	// merchant's SET service is.
	mc.Listen, mc.MetricsListen, mc.Store, mc.Gateway.Address = freeLoopbackAddr(t), "", dsn("merchant.db"), gwAddr
	y, err := yaml.Marshal(mc)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(y, &doc))
	webTLS := map[string]any{"cert": mc.TLS.Cert, "key": mc.TLS.Key}
	announce := []string{"listening on ", "console on "}
	if len(cardholders) > 0 {
		doc["shop"] = map[string]any{"listen": "127.0.0.1:0", "tls": webTLS, "wallet_url": walletBase(b.wallets[cardholders[0]])}
		announce = append(announce, "storefront on ")
	}
	doc["console"] = map[string]any{"listen": "127.0.0.1:0", "tls": webTLS, "users_file": users}
	y, err = yaml.Marshal(doc)
	require.NoError(t, err)
	mCfg := filepath.Join(b.dir, "merchant.yaml")
	require.NoError(t, os.WriteFile(mCfg, y, 0o600))
	b.pin = spkiPin(t, mc.TLS.Cert)
	got := b.start("merchant", announce, "merchant", "serve", "--config", mCfg)
	b.storefront, b.console, b.merchantAddr = got["storefront on "], got["console on "], got["listening on "]
	if len(cardholders) > 0 {
		require.True(t, strings.HasPrefix(b.storefront, "https://"), "storefront URL %q", b.storefront)
	}
	require.True(t, strings.HasPrefix(b.console, "https://"), "console URL %q", b.console)
	return b
}

// walletUIArgs is `setpay wallet ui` for the demo's wallet of cardholder name.
func (b *webBed) walletUIArgs(name string) []string {
	pki := filepath.Join(b.root, "pki")
	return []string{"wallet", "ui", "--wallet", filepath.Join(b.root, "wallet-"+name),
		"--softhsm-dir", filepath.Join(b.root, "softhsm"), "--token", "setpay-wallet",
		"--merchant-ca", filepath.Join(pki, "tls-ca.pem"), "--crls", filepath.Join(pki, "crls.pem"),
		"--listen", "127.0.0.1:0"}
}

// passphrase is the demo's passphrase of cardholder name's wallet.
func (b *webBed) passphrase(name string) string {
	p, err := os.ReadFile(filepath.Join(b.root, "wallet-"+name+".pass"))
	require.NoError(b.t, err)
	return strings.TrimSpace(string(p))
}

// buy is `setpay wallet buy` of offer by cardholder name straight to the merchant's
// SET service (the CLI wallet), for tests whose subject is the console.
func (b *webBed) buy(name, offer string) string {
	b.t.Helper()
	pki := filepath.Join(b.root, "pki")
	r := runSetpay(b.t, b.dir, b.env, "wallet", "buy", "--softhsm-dir", filepath.Join(b.root, "softhsm"), "--token", "setpay-wallet",
		"--wallet", filepath.Join(b.root, "wallet-"+name), "--passphrase-file", filepath.Join(b.root, "wallet-"+name+".pass"),
		"--merchant", b.merchantAddr, "--merchant-ca", filepath.Join(pki, "tls-ca.pem"), "--crls", filepath.Join(pki, "crls.pem"), "--offer", offer)
	require.Zero(b.t, r.code, "wallet buy\n%s", r)
	return r.stdout
}

// walletBase is the wallet UI's origin, the storefront's wallet_url, from the URL it
// printed (http://127.0.0.1:PORT/?token=T): the token is the cardholder's, never the
// merchant's.
func walletBase(u string) string {
	base, _, _ := strings.Cut(u, "/?")
	return strings.TrimSuffix(base, "/")
}

// start starts a service of the built binary, waits for its announcements and stops
// it (SIGTERM) when the test ends, logging its stderr if the test failed.
func (b *webBed) start(name string, announce []string, args ...string) map[string]string {
	b.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := setpayCmd(ctx, b.t, b.dir, b.env, args...)
	log := &lockedBuffer{}
	cmd.Stderr = log
	b.t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if b.t.Failed() {
			b.t.Logf("%s stderr:\n%s", name, log)
		}
	})
	return startAnnounced(b.t, cmd, time.Minute, announce...)
}
