package shop_test

import (
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/merchant/shop"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
)

// TestShopCookiesAreHostPrefixed: the session cookie (which keys every form's CSRF
// token) and the cart cookie are __Host- cookies: Secure, HttpOnly, path /, no
// Domain, so no sibling domain can plant a session on the shop's host.
func TestShopCookiesAreHostPrefixed(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	res, _ := b.get("/") // sets the session cookie
	require.Equal(t, http.StatusOK, res.StatusCode)
	set := res.Cookies()
	res, body := b.post("/cart/add", url.Values{"offer": {"book"}, "quantity": {"1"}, "csrf": {b.csrf()}}) // sets the cart cookie
	require.Equal(t, http.StatusSeeOther, res.StatusCode, body)
	set = append(set, res.Cookies()...)
	require.Len(t, set, 2, "the session and the cart cookie")
	for _, c := range set {
		assert.True(t, strings.HasPrefix(c.Name, "__Host-"), "cookie %s", c.Name)
		assert.True(t, c.Secure, c.Name)
		assert.True(t, c.HttpOnly, c.Name)
		assert.Equal(t, "/", c.Path, c.Name)
		assert.Empty(t, c.Domain, c.Name)
	}
}

// TestShopRefusesOfferWithSpoofingDescription: an offer whose description holds a
// bidirectional override or a control character is refused when the shop starts,
// naming the offer, not at the first checkout (its initiation would not sign).
func TestShopRefusesOfferWithSpoofingDescription(t *testing.T) {
	f := newFixture(t)
	for _, desc := range []string{"The SET book \u202e00.001", "book\nfree gift"} {
		offers := append(systemtest.Offers(), merchant.Offer{ID: "spoof", Description: desc, Amount: 100, Currency: "EUR"})
		_, err := shop.New(shop.Config{Sign: f.bed.MerchantEnt.Sign, MACKey: f.bed.ChallengeKey, Store: f.bed.MerchantDB, MerchantID: "shop-1",
			Brands: []string{system.Brand}, Offers: offers, Endpoint: f.bed.MerchantAddr, ServerName: "127.0.0.1"})
		if assert.Error(t, err, "%q", desc) {
			assert.Contains(t, err.Error(), "offer spoof")
			assert.Contains(t, err.Error(), "order_description")
		}
	}
}

// TestShopCheckoutRateLimited: checkouts (each signs an initiation with the
// merchant's token key and records an order) are limited per client address; over
// the burst the cart page says so in words with 429 and keeps the cart, and no
// order is made; as time passes checkouts are taken again. (Clock-driven, no timing.)
func TestShopCheckoutRateLimited(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	clock := func() time.Time { return now }
	s, err := shop.New(shop.Config{Sign: f.bed.MerchantEnt.Sign, MACKey: f.bed.ChallengeKey, Store: f.bed.MerchantDB, MerchantID: "shop-1",
		Brands: []string{system.Brand}, Offers: systemtest.Offers(), Endpoint: f.bed.MerchantAddr, ServerName: "127.0.0.1",
		CheckoutEvery: time.Minute, CheckoutBurst: 2, Clock: clock})
	require.NoError(t, err)
	srv := httptest.NewTLSServer(s.Handler())
	t.Cleanup(srv.Close)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	b := &browser{t: t, url: srv.URL, c: &http.Client{Transport: srv.Client().Transport, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}

	assert.NotEmpty(t, b.checkout(map[string]string{"book": "1"}))
	assert.NotEmpty(t, b.checkout(map[string]string{"book": "1"}))
	tok := b.csrf()
	res, body := b.post("/cart/add", url.Values{"csrf": {tok}, "offer": {"book"}, "quantity": {"1"}})
	require.Equal(t, http.StatusSeeOther, res.StatusCode, body)
	res, body = b.post("/checkout", url.Values{"csrf": {tok}})
	assert.Equal(t, http.StatusTooManyRequests, res.StatusCode)
	assert.Contains(t, body, "Too many checkouts from your address")
	assert.Contains(t, body, `role="alert"`)
	assert.Empty(t, res.Header.Get("Location"), "no order")
	assertSecurityHeaders(t, res)
	_, body = b.get("/cart")
	assert.NotContains(t, body, "Your cart is empty", "the cart is kept")

	now = now.Add(time.Minute)
	res, body = b.post("/checkout", url.Values{"csrf": {tok}})
	assert.Equal(t, http.StatusSeeOther, res.StatusCode, body)
}
