package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/store"
)

// shopMerchantConfig is the demo's merchant configuration on a fresh store of the
// test's own, listening on a free loopback port, with a shop block using the
// merchant's own TLS certificate and token key. No gateway runs: the storefront
// needs none until a wallet pays.
func shopMerchantConfig(t *testing.T) (root, dir string, mc merchantConfig) {
	t.Helper()
	root = demoFixture(t)
	dir = t.TempDir()
	dsn := "sqlite:" + filepath.Join(dir, "merchant.db")
	db, err := store.Open(context.Background(), dsn)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	mc = readConfig[merchantConfig](t, filepath.Join(root, "merchant.yaml"))
	mc.Listen, mc.MetricsListen, mc.Store, mc.Gateway.Address = freeLoopbackAddr(t), "", dsn, freeLoopbackAddr(t)
	mc.Shop = &shopConfig{Listen: "127.0.0.1:0"}
	mc.Shop.TLS.Cert, mc.Shop.TLS.Key = mc.TLS.Cert, mc.TLS.Key
	return root, dir, mc
}

// startShopMerchant starts `merchant serve` and returns the storefront's base URL
// once both "storefront on https://ADDR/" and "listening on" are printed.
func startShopMerchant(t *testing.T, root, dir string, mc merchantConfig) string {
	t.Helper()
	cfg := filepath.Join(dir, "merchant.yaml")
	writeConfig(t, cfg, mc)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := setpayCmd(ctx, t, dir, []string{"SOFTHSM2_CONF=" + filepath.Join(root, "softhsm", "softhsm2.conf")}, "merchant", "serve", "--config", cfg)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stdout = pw
	require.NoError(t, cmd.Start())
	_ = pw.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		cancel()
		if t.Failed() {
			t.Logf("merchant stderr:\n%s", stderr)
		}
	})
	found := make(chan string, 1)
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		shopURL := ""
		for sc.Scan() {
			line := sc.Text()
			if u, ok := strings.CutPrefix(line, "storefront on "); ok {
				shopURL = strings.TrimSpace(u)
			}
			if strings.Contains(line, " listening on ") && shopURL != "" {
				found <- shopURL
			}
		}
		close(found)
	}()
	select {
	case u, ok := <-found:
		require.True(t, ok, "merchant serve exited without serving the storefront:\n%s", stderr)
		return u
	case <-time.After(time.Minute):
		require.FailNow(t, "merchant serve did not start", "%s", stderr)
		return ""
	}
}

// TestMerchantServeStorefront: `merchant serve` with a shop block serves the
// catalogue over HTTPS with the TLS key in the merchant's token (a Go client
// trusting only the TLS CA), and a checkout gives a .setpay file that
// VerifyInitiation accepts with the demo's SET root and CRLs, naming the
// merchant's SET listener.
func TestMerchantServeStorefront(t *testing.T) {
	root, dir, mc := shopMerchantConfig(t)
	base := startShopMerchant(t, root, dir, mc)
	require.True(t, strings.HasPrefix(base, "https://127.0.0.1:") && strings.HasSuffix(base, "/"), base)
	base = strings.TrimSuffix(base, "/")

	tlsCA, err := pool(mc.Gateway.TLSCA) // the demo's one TLS CA
	require.NoError(t, err)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tlsCA, MinVersion: tls.VersionTLS12}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(p string) (*http.Response, []byte) {
		res, err := c.Get(base + p)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res, b
	}
	post := func(p string, f url.Values) *http.Response {
		res, err := c.PostForm(base+p, f)
		require.NoError(t, err)
		_ = res.Body.Close()
		return res
	}

	res, body := get("/")
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Contains(t, string(body), mc.Offers[0].Description)
	assert.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
	assert.Contains(t, res.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(body)
	require.NotNil(t, m)
	tok := string(m[1])

	res = post("/cart/add", url.Values{"csrf": {tok}, "offer": {mc.Offers[0].ID}, "quantity": {"3"}})
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	res = post("/checkout", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	ref := strings.TrimPrefix(res.Header.Get("Location"), "/order/")
	res, body = get("/order/" + ref)
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Contains(t, string(body), "Awaiting payment")

	res, file := get("/order/" + ref + "/initiation")
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, setproto.InitiationMIMEType, res.Header.Get("Content-Type"))
	assert.Contains(t, res.Header.Get("Content-Disposition"), "attachment")

	roots, err := readPEMCerts(mc.Root)
	require.NoError(t, err)
	var inter []*x509.Certificate
	for _, p := range mc.CAChain {
		cs, err := readPEMCerts(p)
		require.NoError(t, err)
		inter = append(inter, cs...)
	}
	crls := pki.NewMemoryCRLs()
	for _, p := range mc.CRLs {
		require.NoError(t, loadCRLs(crls, p))
	}
	v, err := pki.NewVerifier(roots[0], crls)
	require.NoError(t, err)
	got, err := setproto.VerifyInitiation(context.Background(), file, &setproto.Trust{Verifier: v, Intermediates: inter, Cache: pki.NewCertCache(8)}, time.Now())
	require.NoError(t, err)
	assert.Equal(t, 3*mc.Offers[0].Amount, got.Amount)
	assert.Equal(t, ref, got.OfferID)
	assert.Equal(t, mc.Listen, got.Endpoint)
	assert.Equal(t, "127.0.0.1", got.ServerName)
	assert.Equal(t, []string{mc.Brand}, got.Brands)
}

// TestMerchantServeRefusesBadShopConfig: a shop block with mistakes makes `merchant
// serve` exit 1 naming each field at fault, before anything listens.
func TestMerchantServeRefusesBadShopConfig(t *testing.T) {
	root, dir, mc := shopMerchantConfig(t)
	mc.Shop = &shopConfig{Listen: "no-port", WalletURL: "ftp://wallet", MaxQuantity: -1, InitiationValidity: "48h"}
	mc.Shop.TLS.Cert = mc.TLS.Cert
	cfg := filepath.Join(dir, "merchant.yaml")
	writeConfig(t, cfg, mc)
	r := runSetpay(t, dir, []string{"SOFTHSM2_CONF=" + filepath.Join(root, "softhsm", "softhsm2.conf")}, "merchant", "serve", "--config", cfg)
	assert.Equal(t, 1, r.code, "%s", r)
	for _, field := range []string{"shop.listen: want host:port", "shop.tls.key: required", "shop.wallet_url:", "shop.max_quantity:", "shop.initiation_validity:"} {
		assert.Contains(t, r.stderr, field)
	}
	assert.NotContains(t, r.stdout, "storefront on")
	assert.NotContains(t, r.stderr, "panic")
}
