package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/wallet"
)

// walletUI is `setpay wallet ui` started from the built binary, and a browser-like
// client of it (Go's http.Client with a cookie jar).
type walletUI struct {
	t    *testing.T
	url  string // http://127.0.0.1:PORT
	c    *http.Client
	csrf string
	log  *lockedBuffer
}

// startWalletUI starts `setpay wallet ui` with args, reads the URL it prints and
// opens it as a browser would: the session cookie lands in the client's jar.
func startWalletUI(t *testing.T, dir string, env []string, args ...string) *walletUI {
	t.Helper()
	cmd := setpayCmd(context.Background(), t, dir, env, append([]string{"wallet", "ui", "--listen", "127.0.0.1:0"}, args...)...)
	ui := &walletUI{t: t, log: &lockedBuffer{}}
	cmd.Stderr = ui.log
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stdout = pw
	require.NoError(t, cmd.Start())
	_ = pw.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		assert.NoError(t, err, "wallet ui stops cleanly on SIGTERM")
		if t.Failed() {
			t.Logf("wallet ui stderr:\n%s", ui.log)
		}
	})
	urlc := make(chan string, 1)
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "wallet UI on "); ok && !sent {
				urlc <- strings.TrimSpace(u)
				sent = true
			}
		}
		close(urlc)
	}()
	var printed string
	select {
	case u, ok := <-urlc:
		require.True(t, ok, "wallet ui exited without its URL:\n%s", ui.log)
		printed = u
	case <-time.After(time.Minute):
		require.FailNow(t, "wallet ui printed no URL", "%s", ui.log)
	}
	u, err := url.Parse(printed)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", u.Hostname())
	require.NotEmpty(t, u.Query().Get("token"), "the URL carries the access token")
	ui.url = "http://" + u.Host
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	ui.c = &http.Client{Jar: jar, Timeout: 2 * time.Minute}
	// Without the token's session nothing is served.
	code, body := ui.get("/")
	require.Equal(t, http.StatusForbidden, code, body)
	code, body = ui.get(printed[len(ui.url):])
	require.Equal(t, http.StatusOK, code, body)
	return ui
}

var uiCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (ui *walletUI) keep(resp *http.Response, err error) (int, string) {
	ui.t.Helper()
	require.NoError(ui.t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(ui.t, resp.Body.Close())
	require.NoError(ui.t, err)
	if m := uiCSRF.FindSubmatch(b); m != nil {
		ui.csrf = string(m[1])
	}
	return resp.StatusCode, string(b)
}

func (ui *walletUI) get(path string) (int, string) {
	ui.t.Helper()
	return ui.keep(ui.c.Get(ui.url + path))
}

func (ui *walletUI) post(path string, form url.Values) (int, string) {
	ui.t.Helper()
	form.Set("csrf", ui.csrf)
	return ui.keep(ui.c.PostForm(ui.url+path, form))
}

// demoInitiation signs a payment initiation of offer with the demo merchant's SET
// signature key in its token, as the storefront does at checkout.
func demoInitiation(t *testing.T, b *merchantBed, offer string) []byte {
	t.Helper()
	ctx := context.Background()
	mc := readConfig[merchantConfig](t, b.merchantCfg)
	var o *merchant.Offer
	for i := range mc.Offers {
		if mc.Offers[i].ID == offer {
			o = &mc.Offers[i]
		}
	}
	require.NotNil(t, o, "offer %s in merchant.yaml", offer)
	t.Setenv("SOFTHSM2_CONF", filepath.Join(b.root, "softhsm", "softhsm2.conf"))
	mod, err := hsm.OpenModule(mc.Module, nil)
	require.NoError(t, err)
	defer mod.Close()
	tok, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: mc.Token}, PIN: hsm.PINSource(mc.PINSource)})
	require.NoError(t, err)
	defer tok.Close()
	u, err := hsm.ParseURI(mc.SignKey)
	require.NoError(t, err)
	key, err := tok.KeyByURI(ctx, u)
	require.NoError(t, err)
	certs, err := readPEMCerts(mc.SignCert)
	require.NoError(t, err)
	now := time.Now().Truncate(time.Second)
	file, err := setproto.SignInitiation(ctx, setproto.Party{Key: key, Cert: certs[0], Chain: certs[1:]}, setproto.Initiation{
		Endpoint: b.merchantAddr, ServerName: "127.0.0.1", MerchantID: "bookshop-42", Brands: []string{mc.Brand},
		Amount: o.Amount, Currency: o.Currency, Description: o.Description, OfferID: offer, OrderRef: "web-1", IssuedAt: now, ExpiresAt: now.Add(30 * time.Minute)})
	require.NoError(t, err)
	return file
}

// uiLink is the path of a storefront's link to the wallet for file.
func uiLink(t *testing.T, file []byte) string {
	t.Helper()
	u, err := url.Parse(setproto.InitiationLink("http://127.0.0.1:7447", file))
	require.NoError(t, err)
	return u.RequestURI()
}

// copyDemoWallet copies the demo's wallet of Alice (key in the demo's wallet token)
// so the UI's history and card files go to this test's own directory.
func copyDemoWallet(t *testing.T, root string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "wallet")
	require.NoError(t, os.MkdirAll(dst, 0o700))
	for _, name := range []string{wallet.FileCert, wallet.FileChain, wallet.FileRoot, wallet.FileKeyLabel, wallet.FileCard} {
		b, err := os.ReadFile(filepath.Join(root, "wallet-alice", name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, name), b, 0o600))
	}
	return dst
}

// TestWalletUIBinaryPurchase: `setpay wallet ui` from the built binary, against the
// demo's gateway and merchant each run by `serve`, does what a browser does: opens
// the printed URL, follows a shop's link with a signed initiation, sees the
// merchant and the gateway verified, pays with the passphrase, pays again in the
// same process, reads the history and asks the merchant for the state. A tampered
// initiation is refused on the page.
func TestWalletUIBinaryPurchase(t *testing.T) {
	b := newMerchantBed(t)
	dir := copyDemoWallet(t, b.root)
	pass, err := os.ReadFile(filepath.Join(b.root, "wallet-alice.pass"))
	require.NoError(t, err)
	passphrase := strings.TrimSpace(string(pass))
	ui := startWalletUI(t, b.dir, b.env, "--wallet", dir, "--softhsm-dir", filepath.Join(b.root, "softhsm"), "--token", "setpay-wallet",
		"--merchant-ca", filepath.Join(b.root, "pki", "tls-ca.pem"), "--crls", filepath.Join(b.root, "pki", "crls.pem"))

	code, body := ui.get("/")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "number shown after its first unlock", "the demo's wallet predates card.masked")

	book := demoInitiation(t, b, "book")
	tampered := bytes.Clone(book)
	i := bytes.Index(tampered, []byte("Cryptography"))
	require.Positive(t, i)
	tampered[i] = 'H'
	code, body = ui.get(uiLink(t, tampered))
	assert.Equal(t, http.StatusUnprocessableEntity, code)
	assert.Contains(t, body, "This payment initiation has been altered")

	var xids []string
	for _, file := range [][]byte{book, demoInitiation(t, b, "coffee")} {
		code, body = ui.get(uiLink(t, file))
		require.Equal(t, http.StatusOK, code, body)
		assert.Contains(t, body, "Merchant (verified from its certificate chain)")
		assert.Contains(t, body, "bookshop-42")
		assert.Contains(t, body, "gw-eu-1")
		m := regexp.MustCompile(`name="pending" value="([^"]+)"`).FindStringSubmatch(body)
		require.NotNil(t, m, body)
		code, body = ui.post("/pay", url.Values{"pending": {m[1]}, "card": {"main"}, "passphrase": {"wrong passphrase!"}})
		assert.Equal(t, http.StatusForbidden, code)
		assert.Contains(t, body, "Passphrase: wrong passphrase")
		code, body = ui.post("/pay", url.Values{"pending": {m[1]}, "card": {"main"}, "passphrase": {passphrase}})
		require.Equal(t, http.StatusOK, code, body)
		assert.Contains(t, body, "Approved: APPROVED")
		assert.Contains(t, body, "411111******1111")
		assert.NotContains(t, body, "4111111111111111")
		x := regexp.MustCompile(`<code id="xid">([^<]+)</code>`).FindStringSubmatch(body)
		require.NotNil(t, x)
		xids = append(xids, x[1])
	}
	code, body = ui.get("/")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "411111******1111", "the card is listed masked once unlocked")

	code, body = ui.get("/history")
	require.Equal(t, http.StatusOK, code)
	for _, x := range xids {
		assert.Contains(t, body, x)
	}
	code, _ = ui.get("/purchase?xid=" + xids[1])
	require.Equal(t, http.StatusOK, code)
	code, body = ui.post("/inquire", url.Values{"xid": {xids[1]}, "passphrase": {passphrase}})
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "The merchant says: captured.")

	// The merchant's books agree.
	var orders []struct {
		XID   string `json:"xid"`
		State string `json:"state"`
	}
	b.op(&orders, "orders")
	states := map[string]string{}
	for _, o := range orders {
		states[o.XID] = o.State
	}
	assert.Equal(t, "authorized", states[xids[0]])
	assert.Equal(t, "captured", states[xids[1]])
}

// TestWalletUIBinaryRefusesNonLoopback: `wallet ui` refuses to listen anywhere but
// loopback, as a usage error, before it opens anything.
func TestWalletUIBinaryRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:7447", ":7447", "192.0.2.1:7447"} {
		r := runSetpay(t, t.TempDir(), nil, "wallet", "ui", "--wallet", t.TempDir(), "--listen", addr)
		assert.Equal(t, exitUsage, r.code, "%s\n%s", addr, r)
		assert.Contains(t, r.stderr, "not a loopback address", addr)
	}
}

// TestWalletUIBinaryRegistersCard: a card registered through `setpay wallet ui`
// with the CA service (`ca serve`, each its own process of the built binary) gets
// its certificate and its key in the wallet token; every page shows the card
// number masked only, and the wallet directory is one `wallet buy` reads.
func TestWalletUIBinaryRegistersCard(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a whole CA; skipped with -short")
	}
	dir := t.TempDir()
	c := cli{t: t, dir: dir}
	c.run("hsm", "init-softhsm", "--softhsm-dir", "./var/softhsm", "--tokens", "setpay-root,setpay-ca,setpay-wallet")
	c.run("ca", "init", "--softhsm-dir", "./var/softhsm", "--root-token", "setpay-root", "--token", "setpay-ca", "--ca-dir", "./var/ca", "--store", "sqlite:./var/setpay.db")
	ctx, cancel := context.WithCancel(context.Background())
	serve := setpayCmd(ctx, t, dir, nil, "ca", "serve", "--softhsm-dir", "./var/softhsm", "--listen", "127.0.0.1:0")
	caLog := &lockedBuffer{}
	serve.Stderr = caLog
	t.Cleanup(func() {
		cancel()
		_ = serve.Wait()
		if t.Failed() {
			t.Logf("ca serve stderr:\n%s", caLog)
		}
	})
	addr := startServer(t, serve, 30*time.Second)

	ui := startWalletUI(t, dir, nil, "--wallet", "./var/wallet", "--softhsm-dir", "./var/softhsm", "--token", "setpay-wallet",
		"--ca", addr, "--ca-root", "./var/ca/root.pem", "--ca-tls", "./var/ca/tls-ca.pem", "--ca-crls")
	const pan, pass = "4111111111111111", "correct horse battery staple"
	var bodies []string
	code, body := ui.get("/register")
	require.Equal(t, http.StatusOK, code)
	bodies = append(bodies, body)
	code, body = ui.post("/register", url.Values{"pan": {pan}, "expiry": {"12/30"}, "postal_code": {"99999"},
		"passphrase": {pass}, "passphrase2": {pass}})
	assert.Equal(t, http.StatusUnprocessableEntity, code, "the CA checks the postal code")
	assert.Contains(t, body, "The card authority did not register card 411111******1111")
	bodies = append(bodies, body)
	code, body = ui.post("/register", url.Values{"pan": {pan}, "expiry": {"12/30"}, "postal_code": {"75001"},
		"cardholder_name": {"Alice Example"}, "passphrase": {pass}, "passphrase2": {pass}})
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "Card 411111******1111 is registered.")
	assert.Contains(t, body, "in a token")
	bodies = append(bodies, body)
	for _, b := range bodies {
		assert.NotContains(t, b, pan)
	}
	for _, f := range []string{wallet.FileCert, wallet.FileCard, wallet.FileKeyLabel, wallet.FileMaskedPAN} {
		assert.FileExists(t, filepath.Join(dir, "var", "wallet", f))
	}
	masked, err := wallet.MaskedPAN(filepath.Join(dir, "var", "wallet"))
	require.NoError(t, err)
	assert.Equal(t, "411111******1111", masked)
	assert.NotContains(t, ui.log.String(), pan, "nor in the log")
}

// TestWalletUIBinaryPaysStorefrontOrder: the whole web path as separate processes
// of the built binary: the storefront (merchant serve with a shop block) checks out
// a cart, its order page links to the wallet UI, the wallet UI verifies the
// initiation and the merchant's offer, pays through the merchant and the gateway,
// and the order page then shows the order authorized.
func TestWalletUIBinaryPaysStorefrontOrder(t *testing.T) {
	b := newMerchantBed(t)
	dir := copyDemoWallet(t, b.root)
	pass, err := os.ReadFile(filepath.Join(b.root, "wallet-alice.pass"))
	require.NoError(t, err)
	ui := startWalletUI(t, b.dir, b.env, "--wallet", dir, "--softhsm-dir", filepath.Join(b.root, "softhsm"), "--token", "setpay-wallet",
		"--merchant-ca", filepath.Join(b.root, "pki", "tls-ca.pem"), "--crls", filepath.Join(b.root, "pki", "crls.pem"))

	b.stopMerchant()
	mc := readConfig[merchantConfig](t, b.merchantCfg)
	mc.Shop = &shopConfig{Listen: "127.0.0.1:0", WalletURL: ui.url}
	mc.Shop.TLS.Cert, mc.Shop.TLS.Key = mc.TLS.Cert, mc.TLS.Key
	shop := strings.TrimSuffix(startShopMerchant(t, b.root, b.dir, mc), "/")

	tlsCA, err := pool(filepath.Join(b.root, "pki", "tls-ca.pem"))
	require.NoError(t, err)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	shopper := &http.Client{Jar: jar, Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tlsCA, MinVersion: tls.VersionTLS12}}}
	read := func(res *http.Response, err error) string {
		t.Helper()
		require.NoError(t, err)
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
		return string(body)
	}
	body := read(shopper.Get(shop + "/"))
	csrf := uiCSRF.FindStringSubmatch(body)
	require.NotNil(t, csrf)
	read(shopper.PostForm(shop+"/cart/add", url.Values{"csrf": {csrf[1]}, "offer": {"book"}, "quantity": {"2"}}))
	order := read(shopper.PostForm(shop+"/checkout", url.Values{"csrf": {csrf[1]}}))
	m := regexp.MustCompile(`id="wallet-link" href="([^"]+)"`).FindStringSubmatch(order)
	require.NotNil(t, m, order)
	walletLink := html.UnescapeString(m[1])
	require.True(t, strings.HasPrefix(walletLink, ui.url+"/receive?initiation="), walletLink)
	orderURL := regexp.MustCompile(`href="(/order/[^"/]+)"`).FindStringSubmatch(order)
	require.NotNil(t, orderURL)

	code, confirm := ui.get(strings.TrimPrefix(walletLink, ui.url))
	require.Equal(t, http.StatusOK, code, confirm)
	assert.Contains(t, confirm, "99.80 EUR", "two books")
	assert.Contains(t, confirm, "bookshop-42")
	assert.Contains(t, confirm, "gw-eu-1")
	pend := regexp.MustCompile(`name="pending" value="([^"]+)"`).FindStringSubmatch(confirm)
	require.NotNil(t, pend)
	code, res := ui.post("/pay", url.Values{"pending": {pend[1]}, "card": {"main"}, "passphrase": {strings.TrimSpace(string(pass))}})
	require.Equal(t, http.StatusOK, code, res)
	assert.Contains(t, res, "Approved: APPROVED")

	body = read(shopper.Get(shop + orderURL[1]))
	assert.Contains(t, body, `data-state="authorized"`)
}
