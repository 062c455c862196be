package shop_test

import (
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/merchant/shop"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
	"github.com/setpay/setpay/wallet"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

var cards = systemtest.Cards()

// localMerchant lets a wallet call the shop's merchant in-process.
type localMerchant struct{ m *merchant.Merchant }

func (l localMerchant) PurchaseInit(ctx context.Context, in *setpb.PInitReq, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return l.m.PurchaseInit(ctx, in)
}

func (l localMerchant) Purchase(ctx context.Context, in *setpb.PurchaseRequest, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return l.m.Purchase(ctx, in)
}

func (l localMerchant) Inquiry(ctx context.Context, in *setpb.Signed, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return l.m.Inquiry(ctx, in)
}

// fixture: a SET bed (SoftHSM tokens, SQLite stores, a real gateway), a merchant
// configured with the shop's offer book on the bed's merchant store and keys, and the
// storefront on an httptest TLS server.
type fixture struct {
	bed  *system.Bed
	m    *merchant.Merchant
	shop *shop.Shop
	srv  *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	caTok, walTok := softhsmtest.NewToken(t), softhsmtest.NewToken(t)
	dir := t.TempDir()
	b, err := system.Build(ctx, system.Config{
		CARoot: caTok, CA: caTok, Gateway: softhsmtest.NewToken(t), Merchant: softhsmtest.NewToken(t), Wallet: walTok, TLS: walTok,
		GatewayDSN: "sqlite:" + filepath.Join(dir, "gw.db"), MerchantDSN: "sqlite:" + filepath.Join(dir, "mer.db"),
		GatewayID: "gw-1", MerchantID: "shop-1", Offers: systemtest.Offers(), Cards: cards,
	}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	m, err := merchant.New(ctx, merchant.Config{Sign: b.MerchantEnt.Sign, KXCert: b.MerchantEnt.KXCert, KXKey: b.MerchantEnt.KXKey,
		Trust: b.NewTrust(), Store: b.MerchantDB, Brand: system.Brand, GatewayKX: b.GatewayEnt.KXCert,
		GatewayChain: []*x509.Certificate{b.H.PCA.Certificate(), b.H.Brand.Certificate()},
		Gateway:      setpb.NewGatewayClient(b.GatewayConn), Offers: systemtest.Offers(), ChallengeKey: b.ChallengeKey,
		OfferBook: shop.NewBook(b.MerchantDB)})
	require.NoError(t, err)
	s, err := shop.New(shop.Config{Sign: b.MerchantEnt.Sign, MACKey: b.ChallengeKey, Store: b.MerchantDB, MerchantID: "shop-1",
		Brands: []string{system.Brand}, Offers: systemtest.Offers(), Endpoint: b.MerchantAddr, ServerName: "127.0.0.1"})
	require.NoError(t, err)
	srv := httptest.NewTLSServer(s.Handler())
	t.Cleanup(srv.Close)
	return &fixture{bed: b, m: m, shop: s, srv: srv}
}

// browser is a client with a cookie jar that does not follow redirects.
type browser struct {
	t   *testing.T
	c   *http.Client
	url string
}

func (f *fixture) browser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Transport: f.srv.Client().Transport, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &browser{t: t, c: c, url: f.srv.URL}
}

func (b *browser) get(path string) (*http.Response, string) {
	b.t.Helper()
	res, err := b.c.Get(b.url + path)
	require.NoError(b.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(b.t, err)
	return res, string(body)
}

func (b *browser) post(path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	res, err := b.c.PostForm(b.url+path, form)
	require.NoError(b.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(b.t, err)
	return res, string(body)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf loads the catalogue and returns the session's form token.
func (b *browser) csrf() string {
	b.t.Helper()
	res, body := b.get("/")
	require.Equal(b.t, http.StatusOK, res.StatusCode)
	m := csrfRE.FindStringSubmatch(body)
	require.NotNil(b.t, m, "the catalogue has forms with a CSRF token")
	return m[1]
}

// checkout puts lines (offer -> quantity) in the cart and checks out; it returns
// the order reference.
func (b *browser) checkout(lines map[string]string) string {
	b.t.Helper()
	tok := b.csrf()
	for id, q := range lines {
		res, body := b.post("/cart/add", url.Values{"csrf": {tok}, "offer": {id}, "quantity": {q}})
		require.Equal(b.t, http.StatusSeeOther, res.StatusCode, body)
	}
	res, body := b.post("/checkout", url.Values{"csrf": {tok}})
	require.Equal(b.t, http.StatusSeeOther, res.StatusCode, body)
	loc := res.Header.Get("Location")
	require.True(b.t, strings.HasPrefix(loc, "/order/o-"), loc)
	return strings.TrimPrefix(loc, "/order/")
}

func assertSecurityHeaders(t *testing.T, res *http.Response) {
	t.Helper()
	csp := res.Header.Get("Content-Security-Policy")
	assert.Contains(t, csp, "default-src 'none'")
	assert.Contains(t, csp, "frame-ancestors 'none'")
	assert.NotContains(t, csp, "unsafe-inline")
	assert.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
	assert.Equal(t, "no-referrer", res.Header.Get("Referrer-Policy"))
}

// TestShopCatalogueCartCheckout: the catalogue lists the configured offers with
// labelled inputs; the cart (a MACed cookie) adds up; checkout records the order and
// its page offers the .setpay download and the wallet link; the downloaded file is an
// initiation VerifyInitiation accepts for the cart's total and the order's reference.
func TestShopCatalogueCartCheckout(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	res, body := b.get("/")
	require.Equal(t, http.StatusOK, res.StatusCode)
	assertSecurityHeaders(t, res)
	assert.Contains(t, body, "The SET book, hardcover")
	assert.Contains(t, body, "25.00 EUR")
	assert.Contains(t, body, `<label for="qty-book">`)
	assert.Contains(t, body, `id="qty-book"`)
	for _, c := range res.Cookies() {
		assert.True(t, c.Secure && c.HttpOnly, "cookie %s is Secure and HttpOnly", c.Name)
		assert.Equal(t, http.SameSiteLaxMode, c.SameSite)
	}

	tok := b.csrf()
	res, _ = b.post("/cart/add", url.Values{"csrf": {tok}, "offer": {"book"}, "quantity": {"2"}})
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	res, _ = b.post("/cart/add", url.Values{"csrf": {tok}, "offer": {"coffee"}, "quantity": {"1"}})
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	res, body = b.get("/cart")
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Contains(t, body, "65.00 EUR", "2 x 25.00 + 15.00")
	res, _ = b.post("/cart/update", url.Values{"csrf": {tok}, "qty-book": {"1"}, "qty-coffee": {"1"}})
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	_, body = b.get("/cart")
	assert.Contains(t, body, "40.00 EUR")

	res, _ = b.post("/checkout", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	ref := strings.TrimPrefix(res.Header.Get("Location"), "/order/")
	_, body = b.get("/cart")
	assert.Contains(t, body, "Your cart is empty", "checkout empties the cart")

	res, body = b.get("/order/" + ref)
	require.Equal(t, http.StatusOK, res.StatusCode)
	assertSecurityHeaders(t, res)
	assert.Contains(t, body, "Awaiting payment")
	assert.Contains(t, body, `<meta http-equiv="refresh" content="3">`, "the page reloads itself while the state can change")
	assert.Contains(t, body, "40.00 EUR")
	assert.Contains(t, body, `href="/order/`+ref+`/initiation"`)
	assert.Contains(t, body, `href="http://127.0.0.1:7447/receive?initiation=`)

	res, file := b.get("/order/" + ref + "/initiation")
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, "application/set-payment-initiation", res.Header.Get("Content-Type"))
	assert.Equal(t, `attachment; filename="`+ref+`.setpay"`, res.Header.Get("Content-Disposition"))
	v, err := setproto.VerifyInitiation(context.Background(), []byte(file), f.bed.NewTrust(), time.Now())
	require.NoError(t, err)
	assert.Equal(t, int64(40_00), v.Amount)
	assert.Equal(t, "EUR", v.Currency)
	assert.Equal(t, ref, v.OfferID)
	assert.Equal(t, ref, v.OrderRef)
	assert.Equal(t, "shop-1", v.MerchantID)
	assert.Equal(t, f.bed.MerchantAddr, v.Endpoint)
	assert.Equal(t, "1 x The SET book, hardcover; 1 x Coffee beans 1kg", v.Description)

	// the link carries the same file
	m := regexp.MustCompile(`receive\?initiation=([A-Za-z0-9_-]+)`).FindStringSubmatch(body)
	require.NotNil(t, m)
	raw, err := setproto.DecodeInitiationParam(m[1])
	require.NoError(t, err)
	assert.Equal(t, []byte(file), raw)
}

// TestShopOrderPageFollowsThePurchase: a wallet pays the order the storefront
// recorded (offer ID = order reference) through the merchant; the order page shows
// authorized, captured (a sale), refunded after a credit, declined for a poor card,
// from the merchant's store, and never a PAN.
func TestShopOrderPageFollowsThePurchase(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	b := f.browser(t)
	buy := func(card int, ref string) *wallet.Receipt {
		w, err := wallet.New(wallet.Config{Identity: f.bed.Cardholders[card].Identity, Trust: f.bed.NewTrust(),
			Merchant: localMerchant{f.m}, Brand: system.Brand})
		require.NoError(t, err)
		r, err := w.Buy(ctx, ref)
		require.NoError(t, err)
		return r
	}
	state := func(ref string) string {
		res, body := b.get("/order/" + ref)
		require.Equal(t, http.StatusOK, res.StatusCode)
		for _, c := range cards {
			assert.NotContains(t, body, c.PAN, "no PAN on a merchant page")
			assert.NotContains(t, body, c.PAN[len(c.PAN)-4:]+"<", "not even the last digits")
		}
		m := regexp.MustCompile(`data-state="([a-z_]+)"`).FindStringSubmatch(body)
		require.NotNil(t, m, body)
		return m[1]
	}

	book := b.checkout(map[string]string{"book": "2"})
	assert.Equal(t, "awaiting", state(book))
	r := buy(systemtest.Alice, book)
	assert.Equal(t, setpb.AuthResult_APPROVED, r.Result)
	assert.Equal(t, int64(50_00), r.Amount, "the merchant charged the cart's total")
	assert.Equal(t, "authorized", state(book))

	coffee := b.checkout(map[string]string{"coffee": "1"})
	r = buy(systemtest.Alice, coffee)
	assert.Equal(t, setpb.AuthResult_APPROVED, r.Result)
	assert.Equal(t, "captured", state(coffee), "a cart of sale items is captured at once")
	_, err := f.m.Credit(ctx, merchant.LifecycleInput{XID: r.XID, Amount: 15_00})
	require.NoError(t, err)
	assert.Equal(t, "refunded", state(coffee))
	_, body := b.get("/order/" + coffee)
	assert.Contains(t, body, "Refunded")
	assert.NotContains(t, body, `http-equiv="refresh"`, "a refunded order no longer changes")

	poor := b.checkout(map[string]string{"book": "1"})
	r = buy(systemtest.Bob, poor)
	assert.Equal(t, setpb.AuthResult_DECLINED_INSUFFICIENT_FUNDS, r.Result)
	assert.Equal(t, "declined", state(poor))
	_, body = b.get("/order/" + poor)
	assert.Contains(t, body, "Pay with another card", "a declined order can still be paid")
	assert.Contains(t, body, `id="wallet-link"`)
	r = buy(systemtest.Alice, poor)
	assert.Equal(t, setpb.AuthResult_APPROVED, r.Result)
	assert.Equal(t, "authorized", state(poor))
	_, body = b.get("/order/" + poor)
	assert.Contains(t, body, "2 payment attempts")
	assert.NotContains(t, body, `id="wallet-link"`, "a paid order offers no initiation")

	// unknown references are refused by the merchant as offers
	w, err := wallet.New(wallet.Config{Identity: f.bed.Cardholders[0].Identity, Trust: f.bed.NewTrust(), Merchant: localMerchant{f.m}, Brand: system.Brand})
	require.NoError(t, err)
	_, err = w.Buy(ctx, "o-AAAAAAAAAAAAAAAAAAAAAA")
	assert.Equal(t, setpb.Reason_UNSUPPORTED.String(), setproto.ReasonOf(err).String(), "%v", err)
}

// TestShopRefusesForms: a POST without the session's CSRF token, with another
// session's, or from another site is refused with a page saying so; bad quantities
// and unknown items are refused in words; a tampered cart cookie is an empty cart;
// an unknown order is a 404 page. Every page has the security headers.
func TestShopRefusesForms(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	tok := b.csrf()
	other := f.browser(t).csrf()

	tests := []struct {
		name   string
		path   string
		form   url.Values
		status int
		text   string
	}{
		{"no CSRF token", "/cart/add", url.Values{"offer": {"book"}, "quantity": {"1"}}, http.StatusForbidden, "did not come from this shop"},
		{"another session's token", "/cart/add", url.Values{"csrf": {other}, "offer": {"book"}, "quantity": {"1"}}, http.StatusForbidden, "did not come from this shop"},
		{"checkout without token", "/checkout", url.Values{}, http.StatusForbidden, "did not come from this shop"},
		{"quantity zero", "/cart/add", url.Values{"csrf": {tok}, "offer": {"book"}, "quantity": {"0"}}, http.StatusBadRequest, "from 1 to 10"},
		{"quantity over the limit", "/cart/add", url.Values{"csrf": {tok}, "offer": {"book"}, "quantity": {"11"}}, http.StatusBadRequest, "from 1 to 10"},
		{"quantity not a number", "/cart/add", url.Values{"csrf": {tok}, "offer": {"book"}, "quantity": {"many"}}, http.StatusBadRequest, "from 1 to 10"},
		{"unknown item", "/cart/add", url.Values{"csrf": {tok}, "offer": {"caviar"}, "quantity": {"1"}}, http.StatusBadRequest, "not in the catalogue"},
		{"empty cart checkout", "/checkout", url.Values{"csrf": {tok}}, http.StatusBadRequest, "The cart is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := b.post(tt.path, tt.form)
			assert.Equal(t, tt.status, res.StatusCode)
			assert.Contains(t, body, tt.text)
			assert.Contains(t, body, `role="alert"`)
			assertSecurityHeaders(t, res)
		})
	}

	t.Run("cross-site form", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/cart/add", strings.NewReader(url.Values{"csrf": {tok}, "offer": {"book"}, "quantity": {"1"}}.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		res, err := b.c.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		assert.Equal(t, http.StatusForbidden, res.StatusCode)
	})

	t.Run("adding over the limit in two steps", func(t *testing.T) {
		res, _ := b.post("/cart/add", url.Values{"csrf": {tok}, "offer": {"book"}, "quantity": {"6"}})
		require.Equal(t, http.StatusSeeOther, res.StatusCode)
		res, body := b.post("/cart/add", url.Values{"csrf": {tok}, "offer": {"book"}, "quantity": {"5"}})
		assert.Equal(t, http.StatusBadRequest, res.StatusCode)
		assert.Contains(t, body, "At most 10")
	})

	t.Run("tampered cart cookie", func(t *testing.T) {
		u, err := url.Parse(f.srv.URL)
		require.NoError(t, err)
		var cart *http.Cookie
		for _, c := range b.c.Jar.Cookies(u) {
			if c.Name == "__Host-setpay_shop_cart" {
				cart = c
			}
		}
		require.NotNil(t, cart, "the cart holds 6 books")
		forged := &http.Cookie{Name: cart.Name, Value: "Ym9vazo5." + strings.SplitN(cart.Value, ".", 2)[1], Path: "/"} // "book:9" under the old MAC
		b.c.Jar.SetCookies(u, []*http.Cookie{forged})
		_, body := b.get("/cart")
		assert.Contains(t, body, "Your cart is empty")
	})

	t.Run("unknown order", func(t *testing.T) {
		for _, p := range []string{"/order/o-AAAAAAAAAAAAAAAAAAAAAA", "/order/nonsense", "/order/o-AAAAAAAAAAAAAAAAAAAAAA/initiation", "/nowhere"} {
			res, body := b.get(p)
			assert.Equal(t, http.StatusNotFound, res.StatusCode, p)
			assert.Contains(t, body, `role="alert"`)
			assertSecurityHeaders(t, res)
		}
	})
}

// TestShopOrderExpires: after its initiation's expiry the order page says so in
// words and offers no initiation, and the merchant's offer book stops offering the
// order once the merchant's initiation validity has passed too.
func TestShopOrderExpires(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := time.Now()
	var at atomic.Int64 // the shop's clock, moved by the test
	at.Store(now.UnixNano())
	clock := func() time.Time { return time.Unix(0, at.Load()) }
	s, err := shop.New(shop.Config{Sign: f.bed.MerchantEnt.Sign, MACKey: f.bed.ChallengeKey, Store: f.bed.MerchantDB, MerchantID: "shop-1",
		Brands: []string{system.Brand}, Offers: systemtest.Offers(), Endpoint: f.bed.MerchantAddr, ServerName: "127.0.0.1",
		InitiationValidity: 10 * time.Minute, Clock: clock})
	require.NoError(t, err)
	srv := httptest.NewTLSServer(s.Handler())
	t.Cleanup(srv.Close)
	f.srv = srv
	b := f.browser(t)
	ref := b.checkout(map[string]string{"book": "1"})

	book := &shop.Book{DB: f.bed.MerchantDB, Clock: clock}
	o, ok, err := book.Offer(ctx, ref)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, int64(25_00), o.Amount)

	at.Store(now.Add(11 * time.Minute).UnixNano())
	res, body := b.get("/order/" + ref)
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Contains(t, body, "This payment initiation expired")
	assert.NotContains(t, body, `id="wallet-link"`)
	assert.NotContains(t, body, `http-equiv="refresh"`)
	_, ok, err = book.Offer(ctx, ref)
	require.NoError(t, err)
	assert.True(t, ok, "a purchase initiated just before expiry may still complete")

	at.Store(now.Add(10*time.Minute + merchant.DefaultInitValidity + time.Second).UnixNano())
	_, ok, err = book.Offer(ctx, ref)
	require.NoError(t, err)
	assert.False(t, ok)
	_, ok, err = book.Offer(ctx, "o-AAAAAAAAAAAAAAAAAAAAAA")
	require.NoError(t, err)
	assert.False(t, ok, "an unknown reference is no offer")
}
