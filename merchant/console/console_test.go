package console_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/merchant/console"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

const (
	operator = "ops-alice"
	password = "correct horse battery"
)

// bed is a whole SET system (CA hierarchy, gateway and merchant on their tokens,
// gRPC with TLS on loopback, SQLite stores) with the console on the merchant, served
// over HTTPS with the merchant's TLS key in its token.
type bed struct {
	*system.Bed
	merTok *hsm.Token
	url    string
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []string // every page the console served in this test
}

func newBed(t *testing.T, tune func(*console.Config)) *bed {
	t.Helper()
	tok := softhsmtest.NewToken(t)
	merTok := softhsmtest.NewToken(t)
	sb, err := system.Build(context.Background(), system.Config{
		CARoot: tok, CA: tok, Gateway: softhsmtest.NewToken(t), Merchant: merTok, Wallet: tok, TLS: tok,
		GatewayDSN: "sqlite:" + filepath.Join(t.TempDir(), "gw.db"), MerchantDSN: "sqlite:" + filepath.Join(t.TempDir(), "mer.db"),
		GatewayID: "gw-1", MerchantID: "shop-1", Offers: systemtest.Offers(), Cards: systemtest.Cards(),
	}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(sb.Close)
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	require.NoError(t, err)
	cfg := console.Config{Operator: sb.Merchant, Logger: slog.New(slog.DiscardHandler), Users: func() (console.Users, error) {
		return console.Users{operator: hash}, nil
	}}
	if tune != nil {
		tune(&cfg)
	}
	c, err := console.New(cfg)
	require.NoError(t, err)
	b := &bed{Bed: sb, merTok: merTok}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, r)
		b.mu.Lock()
		b.bodies = append(b.bodies, rec.Body.String())
		b.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	b.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{sb.MerchantTLS.TLSCertificate()}}
	if cfg.ClientCert {
		b.srv.TLS.ClientAuth, b.srv.TLS.ClientCAs = tls.RequireAndVerifyClientCert, sb.TLS.Pool()
	}
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	b.url = "https://" + b.srv.Listener.Addr().String()
	t.Cleanup(func() { b.noPAN(t) })
	return b
}

// noPAN: no page the console served holds a card number of the test cards, whole
// or as its last digits after a mask.
func (b *bed) noPAN(t *testing.T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	require.NotEmpty(t, b.bodies)
	for _, c := range systemtest.Cards() {
		for i, body := range b.bodies {
			assert.NotContains(t, body, c.PAN, "page %d shows %s's card number", i, c.Name)
			assert.NotContains(t, body, "*"+c.PAN[len(c.PAN)-4:], "page %d shows %s's masked card number", i, c.Name)
		}
	}
}

// buy makes an approved purchase of offer by card and returns its XID.
func (b *bed) buy(t *testing.T, card int, offer string) string {
	t.Helper()
	w, err := b.Wallet(card)
	require.NoError(t, err)
	r, err := w.Buy(context.Background(), offer)
	require.NoError(t, err)
	require.Equal(t, setpb.AuthResult_APPROVED, r.Result)
	return r.XID
}

func (b *bed) orderState(t *testing.T, xid string) store.OrderState {
	t.Helper()
	var o *store.Order
	require.NoError(t, b.MerchantDB.View(context.Background(), func(ctx context.Context, tx store.Tx) error {
		var err error
		o, err = tx.GetOrder(ctx, xid)
		return err
	}))
	return o.State
}

// browser is an HTTPS client with a cookie jar that trusts the bed's TLS CA and does
// not follow redirects.
type browser struct {
	t    *testing.T
	b    *bed
	c    *http.Client
	csrf string // the last page's CSRF token
}

func (b *bed) browser(t *testing.T, cert *tls.Certificate) *browser {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	cfg := &tls.Config{RootCAs: b.TLS.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &browser{t: t, b: b, c: &http.Client{Jar: jar, Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: cfg},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

type page struct {
	status int
	header http.Header
	body   string
}

func (br *browser) do(req *http.Request) page {
	br.t.Helper()
	resp, err := br.c.Do(req)
	require.NoError(br.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(br.t, err)
	if m := csrfRE.FindStringSubmatch(string(body)); m != nil {
		br.csrf = m[1]
	}
	return page{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (br *browser) get(path string) page {
	br.t.Helper()
	req, err := http.NewRequest(http.MethodGet, br.b.url+path, nil)
	require.NoError(br.t, err)
	return br.do(req)
}

// post sends a form; the CSRF token of the last page goes with it unless form sets
// "csrf" (to "" for none).
func (br *browser) post(path string, form url.Values) page {
	br.t.Helper()
	if _, set := form["csrf"]; !set {
		form.Set("csrf", br.csrf)
	} else if form.Get("csrf") == "" {
		form.Del("csrf")
	}
	req, err := http.NewRequest(http.MethodPost, br.b.url+path, strings.NewReader(form.Encode()))
	require.NoError(br.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return br.do(req)
}

func (br *browser) login(name, pw string) page {
	br.t.Helper()
	require.Equal(br.t, http.StatusOK, br.get("/login").status)
	return br.post("/login", url.Values{"name": {name}, "password": {pw}})
}

func (br *browser) loggedIn() *browser {
	br.t.Helper()
	p := br.login(operator, password)
	require.Equal(br.t, http.StatusSeeOther, p.status, "%s", p.body)
	require.Equal(br.t, "/", p.header.Get("Location"))
	require.Equal(br.t, http.StatusOK, br.get("/").status)
	return br
}

// assertSecure checks the headers every console page carries.
func assertSecure(t *testing.T, p page) {
	t.Helper()
	assert.Contains(t, p.header.Get("Content-Security-Policy"), "frame-ancestors 'none'")
	assert.Contains(t, p.header.Get("Content-Security-Policy"), "default-src 'none'")
	assert.NotContains(t, p.header.Get("Content-Security-Policy"), "unsafe-inline")
	assert.Equal(t, "nosniff", p.header.Get("X-Content-Type-Options"))
	assert.Equal(t, "no-referrer", p.header.Get("Referrer-Policy"))
	assert.Equal(t, "no-store", p.header.Get("Cache-Control"))
}

// TestConsoleLoginRequired: without a session every page sends to the login form,
// every action is refused and nothing reaches the gateway; the session cookie is
// Secure, HttpOnly and SameSite=Strict; logging out ends the session.
func TestConsoleLoginRequired(t *testing.T) {
	b := newBed(t, nil)
	xid := b.buy(t, systemtest.Alice, "book")
	br := b.browser(t, nil)
	for _, path := range []string{"/", "/orders/" + xid, "/?state=authorized"} {
		p := br.get(path)
		assert.Equal(t, http.StatusSeeOther, p.status, path)
		assert.Equal(t, "/login", p.header.Get("Location"), path)
		assertSecure(t, p)
	}
	p := br.get("/login")
	require.Equal(t, http.StatusOK, p.status)
	assertSecure(t, p)
	assert.Contains(t, p.body, `<label for="name">Name</label>`)
	assert.Contains(t, p.body, `<label for="password">Password</label>`)
	for _, path := range []string{"/orders/" + xid + "/capture", "/batches"} {
		p := br.post(path, url.Values{"action": {"open"}, "batch": {"b1"}})
		assert.Equal(t, http.StatusUnauthorized, p.status, path)
		assert.Contains(t, p.body, "You are not logged in")
	}
	assert.Equal(t, store.OrderAuthorized, b.orderState(t, xid), "nothing was captured")

	resp, err := b.browser(t, nil).c.Get(b.url + "/login")
	require.NoError(t, err)
	_ = resp.Body.Close()
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == console.CookieName {
			ck = c
		}
	}
	require.NotNil(t, ck, "a session cookie for the login form")
	assert.True(t, ck.Secure)
	assert.True(t, ck.HttpOnly)
	assert.Equal(t, http.SameSiteStrictMode, ck.SameSite)

	br = b.browser(t, nil).loggedIn()
	p = br.get("/orders/" + xid)
	require.Equal(t, http.StatusOK, p.status)
	assert.Contains(t, p.body, "Signed in as "+operator)
	p = br.post("/logout", url.Values{})
	assert.Equal(t, http.StatusSeeOther, p.status)
	assert.Equal(t, "/login", br.get("/").header.Get("Location"), "logged out")
}

// TestConsoleWrongPasswordRefused: a wrong password and an unknown name get the same
// answer, which says neither which; the right ones log in.
func TestConsoleWrongPasswordRefused(t *testing.T) {
	b := newBed(t, nil)
	for name, tc := range map[string][2]string{
		"wrong password": {operator, "not the password at all"},
		"unknown name":   {"ops-mallory", password},
		"both wrong":     {"ops-mallory", "not the password"},
		"empty":          {"", ""},
	} {
		t.Run(name, func(t *testing.T) {
			br := b.browser(t, nil)
			p := br.login(tc[0], tc[1])
			assert.Equal(t, http.StatusUnauthorized, p.status)
			assert.Contains(t, p.body, "Wrong name or password.")
			assert.NotContains(t, strings.ToLower(p.body), "unknown user")
			assert.NotContains(t, p.body, "Signed in as")
			assert.Equal(t, http.StatusSeeOther, br.get("/").status, "still logged out")
		})
	}
	b.browser(t, nil).loggedIn()
}

// TestConsoleLoginRateLimited: after the burst of failed logins from one address,
// further attempts are refused before the password is checked, even the right one;
// the clock moving on lets it in again.
func TestConsoleLoginRateLimited(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	b := newBed(t, func(c *console.Config) {
		c.LoginBurst, c.LoginEvery = 3, time.Minute
		c.Clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	br := b.browser(t, nil)
	for range 3 {
		assert.Equal(t, http.StatusUnauthorized, br.login(operator, "wrong password!").status)
	}
	p := br.login(operator, password)
	assert.Equal(t, http.StatusTooManyRequests, p.status)
	assert.Contains(t, p.body, "Too many login attempts")
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	assert.Equal(t, http.StatusSeeOther, br.login(operator, password).status)
}

// TestConsoleCSRFRequired: a logged-in session's POST without its CSRF token, or
// with another one, is refused and changes nothing; so is a login without one, and
// a form posted from another site.
func TestConsoleCSRFRequired(t *testing.T) {
	b := newBed(t, nil)
	xid := b.buy(t, systemtest.Alice, "book")
	br := b.browser(t, nil).loggedIn()
	other := b.browser(t, nil).loggedIn()
	for name, token := range map[string]string{"missing": "", "another session's": other.csrf, "made up": "AAAA"} {
		t.Run(name, func(t *testing.T) {
			p := br.post("/orders/"+xid+"/capture", url.Values{"csrf": {token}})
			assert.Equal(t, http.StatusForbidden, p.status)
			assert.Contains(t, p.body, "security token is missing or wrong")
			p = br.post("/batches", url.Values{"csrf": {token}, "action": {"open"}, "batch": {"b1"}})
			assert.Equal(t, http.StatusForbidden, p.status)
			p = br.post("/logout", url.Values{"csrf": {token}})
			assert.Equal(t, http.StatusForbidden, p.status)
		})
	}
	assert.Equal(t, store.OrderAuthorized, b.orderState(t, xid), "nothing was captured")

	anon := b.browser(t, nil)
	anon.get("/login")
	p := anon.post("/login", url.Values{"csrf": {""}, "name": {operator}, "password": {password}})
	assert.Equal(t, http.StatusForbidden, p.status)
	assert.Equal(t, http.StatusSeeOther, anon.get("/").status, "not logged in")

	req, err := http.NewRequest(http.MethodPost, b.url+"/orders/"+xid+"/capture", strings.NewReader(url.Values{"csrf": {br.csrf}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	p = br.do(req)
	assert.Equal(t, http.StatusForbidden, p.status, "a form from another site")
	assert.Equal(t, store.OrderAuthorized, b.orderState(t, xid))
}

// TestConsoleCaptureAndRefund: the operator captures part of an order, then the
// rest, refunds part of it and reverses a refund; each page shows the gateway's
// answer (status, totals, item) and the order's new state. A capture sent twice is
// answered from the gateway's record; a refund beyond the capture is refused with
// the gateway's reason in words.
func TestConsoleCaptureAndRefund(t *testing.T) {
	b := newBed(t, nil)
	xid := b.buy(t, systemtest.Alice, "book") // 25.00 EUR
	br := b.browser(t, nil).loggedIn()

	p := br.get("/")
	require.Equal(t, http.StatusOK, p.status)
	assert.Contains(t, p.body, xid)
	assert.Contains(t, p.body, "25.00 EUR")
	assert.Regexp(t, `state-authorized">authorized<`, p.body)

	p = br.get("/orders/" + xid)
	require.Equal(t, http.StatusOK, p.status)
	for _, label := range []string{"Capture", "Refund", "Reverse authorization", "Reverse capture", "Reverse refund", "Inquiry"} {
		assert.Contains(t, p.body, label)
	}
	assert.Contains(t, p.body, `<label for="capture-amount">`)

	p = br.post("/orders/"+xid+"/capture", url.Values{"amount": {"1000"}})
	require.Equal(t, http.StatusOK, p.status, "%s", p.body)
	assert.Contains(t, p.body, "Gateway answer")
	assert.Contains(t, p.body, `<dd class="status">partially_captured</dd>`)
	assert.Contains(t, p.body, "<dt>Captured</dt><dd>10.00 EUR</dd>")
	assert.Contains(t, p.body, `id="order-state">captured<`)
	again := br.post("/orders/"+xid+"/capture", url.Values{"amount": {"1000"}})
	require.Equal(t, http.StatusOK, again.status)
	assert.Contains(t, again.body, "<dt>Captured</dt><dd>10.00 EUR</dd>", "the same form again captures nothing more")

	p = br.post("/orders/"+xid+"/capture", url.Values{"amount": {"1500"}})
	require.Equal(t, http.StatusOK, p.status, "%s", p.body)
	assert.Contains(t, p.body, `<dd class="status">captured</dd>`)
	assert.Contains(t, p.body, "<dt>Captured</dt><dd>25.00 EUR</dd>")

	p = br.post("/orders/"+xid+"/credit", url.Values{"amount": {"99999"}})
	assert.Equal(t, http.StatusUnprocessableEntity, p.status, "%s", p.body)
	assert.Contains(t, p.body, "Refused (")
	assert.NotContains(t, p.body, "Gateway answer")

	p = br.post("/orders/"+xid+"/credit", url.Values{})
	assert.Equal(t, http.StatusBadRequest, p.status)
	assert.Contains(t, p.body, "Not sent: amount: required.")
	p = br.post("/orders/"+xid+"/credit", url.Values{"amount": {"12.50"}})
	assert.Equal(t, http.StatusBadRequest, p.status)
	assert.Contains(t, p.body, "4990 for 49.90")

	p = br.post("/orders/"+xid+"/credit", url.Values{"amount": {"700"}})
	require.Equal(t, http.StatusOK, p.status, "%s", p.body)
	assert.Contains(t, p.body, "<dt>Refunded</dt><dd>7.00 EUR</dd>")
	assert.Contains(t, p.body, "<dt>Amount moved</dt><dd>7.00 EUR</dd>")
	credit := regexp.MustCompile(`<dt>Item ID</dt><dd><code>([^<]+)</code>`).FindStringSubmatch(p.body)
	require.NotNil(t, credit, "the refund's item ID is shown")

	p = br.post("/orders/"+xid+"/reverse-credit", url.Values{"target": {credit[1]}, "amount": {"200"}})
	require.Equal(t, http.StatusOK, p.status, "%s", p.body)
	assert.Contains(t, p.body, "<dt>Refunded</dt><dd>5.00 EUR</dd>")

	p = br.post("/orders/"+xid+"/inquiry", url.Values{})
	require.Equal(t, http.StatusOK, p.status, "%s", p.body)
	assert.Contains(t, p.body, "credit_reversal")
	assert.Equal(t, store.OrderCaptured, b.orderState(t, xid))

	other := b.buy(t, systemtest.Frank, "book")
	p = br.post("/orders/"+other+"/reverse-auth", url.Values{})
	require.Equal(t, http.StatusOK, p.status, "%s", p.body)
	assert.Contains(t, p.body, `<dd class="status">reversed</dd>`)
	p = br.get("/?state=reversed")
	assert.Contains(t, p.body, other)
	assert.NotContains(t, p.body, xid)

	p = br.get("/orders/no-such-order")
	assert.Equal(t, http.StatusNotFound, p.status)
	assert.Contains(t, p.body, "There is no order no-such-order.")
}

// TestConsoleBatchCloseTotals: a batch opened in the console collects a capture and
// a refund made there; closing it shows its totals per type as the gateway signed
// them.
func TestConsoleBatchCloseTotals(t *testing.T) {
	b := newBed(t, nil)
	xid := b.buy(t, systemtest.Alice, "book")
	br := b.browser(t, nil).loggedIn()

	p := br.post("/batches", url.Values{"action": {"open"}, "batch": {"settle-1"}})
	require.Equal(t, http.StatusOK, p.status, "%s", p.body)
	assert.Contains(t, p.body, "settle-1: open")
	require.Equal(t, http.StatusOK, br.post("/orders/"+xid+"/capture", url.Values{"batch": {"settle-1"}}).status)
	require.Equal(t, http.StatusOK, br.post("/orders/"+xid+"/credit", url.Values{"batch": {"settle-1"}, "amount": {"500"}}).status)

	p = br.post("/batches", url.Values{"action": {"close"}, "batch": {"settle-1"}})
	require.Equal(t, http.StatusOK, p.status, "%s", p.body)
	assert.Contains(t, p.body, "Totals of batch settle-1 (closed")
	assert.Contains(t, p.body, `<tr><td>capture</td><td>EUR</td><td class="num">1</td><td class="num">25.00</td></tr>`)
	assert.Contains(t, p.body, `<tr><td>credit</td><td>EUR</td><td class="num">1</td><td class="num">5.00</td></tr>`)

	p = br.post("/batches", url.Values{"action": {"list"}, "batch": {"settle-1"}})
	require.Equal(t, http.StatusOK, p.status)
	assert.Contains(t, p.body, "settle-1: closed, 2 item(s)")

	p = br.post("/orders/"+xid+"/credit", url.Values{"batch": {"settle-1"}, "amount": {"100"}})
	assert.Equal(t, http.StatusUnprocessableEntity, p.status, "a closed batch takes nothing more")
	p = br.post("/batches", url.Values{"action": {"close"}, "batch": {"bad batch"}})
	assert.Equal(t, http.StatusBadRequest, p.status)
	assert.Contains(t, p.body, "Not sent: batch ID:")
}

// TestConsoleClientCertificate: with client_ca and no users file the verified client
// certificate is the credential: no login form, the orders are shown to the
// certificate's holder, actions still need the CSRF token; a client without a
// certificate does not get through the handshake.
func TestConsoleClientCertificate(t *testing.T) {
	b := newBed(t, func(c *console.Config) { c.Users, c.ClientCert = nil, true })
	xid := b.buy(t, systemtest.Alice, "book")
	k, err := b.merTok.GenerateKey(context.Background(), hsm.KeySpec{Label: "console-client", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	id, err := b.TLS.IssueClient(operator, k, time.Hour)
	require.NoError(t, err)
	cert := id.TLSCertificate()
	br := b.browser(t, &cert)
	p := br.get("/")
	require.Equal(t, http.StatusOK, p.status, "%s", p.body)
	assert.Contains(t, p.body, xid)
	assert.Contains(t, p.body, "Signed in as cert:"+operator)
	assert.Equal(t, http.StatusForbidden, br.post("/orders/"+xid+"/capture", url.Values{"csrf": {""}}).status)
	p = br.post("/orders/"+xid+"/capture", url.Values{})
	require.Equal(t, http.StatusOK, p.status, "%s", p.body)
	assert.Contains(t, p.body, `<dd class="status">captured</dd>`)

	_, err = b.browser(t, nil).c.Get(b.url + "/")
	assert.Error(t, err, "no client certificate, no connection")
}

// TestConsoleClientCertificateAndLogin: with client_ca and a users file both are
// required: the certificate's holder still logs in, and the session is bound to the
// certificate it was made with.
func TestConsoleClientCertificateAndLogin(t *testing.T) {
	b := newBed(t, func(c *console.Config) { c.ClientCert = true })
	k, err := b.merTok.GenerateKey(context.Background(), hsm.KeySpec{Label: "console-client", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	id, err := b.TLS.IssueClient(operator, k, time.Hour)
	require.NoError(t, err)
	cert := id.TLSCertificate()
	br := b.browser(t, &cert)
	assert.Equal(t, http.StatusSeeOther, br.get("/").status, "a certificate alone is not enough")
	br.loggedIn()
	assert.Contains(t, br.get("/").body, "Signed in as "+operator)
}
