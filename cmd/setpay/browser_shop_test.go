//go:build browser

package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/pki"
)

// shopper is a cardholder in the browser: the wallet UI opened from the URL it
// printed (which gives the browser the wallet's session cookie), then the storefront.
type shopper struct {
	t    *testing.T
	b    *webBed
	ctx  context.Context
	name string
}

func newShopper(t *testing.T, b *webBed, name string) *shopper {
	t.Helper()
	ctx := newBrowser(t, b.pin)
	browse(t, ctx, chromedp.Navigate(b.wallets[name]))
	return &shopper{t: t, b: b, ctx: ctx, name: name}
}

// checkout puts qty of offer in the cart from the catalogue and checks out; it
// returns the order page's URL (the page shows the order awaiting payment and the
// link to the wallet). shots names the screenshots of the catalogue, cart and order
// page ("" for none).
func (s *shopper) checkout(offer, qty, wantTotal string, shots bool) string {
	t, ctx := s.t, s.ctx
	t.Helper()
	browse(t, ctx, chromedp.Navigate(s.b.storefront))
	cat := pageText(t, ctx)
	assert.Contains(t, cat, "Applied Cryptography, 2nd edition (hardcover)", "the catalogue is the merchant's offers")
	assert.Contains(t, cat, "49.90")
	assert.Contains(t, cat, "Single-origin coffee beans, 1 kg")
	if shots {
		screenshot(t, ctx, "storefront")
	}
	fill(t, ctx, "#qty-"+offer, qty)
	clickAndLoad(t, ctx, "form[action='/cart/add']:has(input[name=offer][value="+offer+"]) button[type=submit]")
	require.Contains(t, cdpValue(t, ctx, chromedp.Location()), "/cart")
	assert.Contains(t, textOf(t, ctx, "#total"), wantTotal)
	if shots {
		screenshot(t, ctx, "cart")
	}
	clickAndLoad(t, ctx, "#checkout")
	assert.Equal(t, "awaiting", cdpValue(t, ctx, chromedp.Evaluate[string]("document.getElementById('state').dataset.state")))
	assert.Contains(t, textOf(t, ctx, "#amount"), wantTotal)
	if shots {
		screenshot(t, ctx, "checkout")
	}
	return cdpValue(t, ctx, chromedp.Location())
}

// walletLink is the order page's link to the local wallet, which must point at the
// configured wallet UI's /receive with the initiation as its parameter.
func (s *shopper) walletLink() string {
	s.t.Helper()
	href := cdpValue(s.t, s.ctx, chromedp.Evaluate[string]("document.getElementById('wallet-link').href"))
	require.True(s.t, strings.HasPrefix(href, walletBase(s.b.wallets[s.name])+"/receive?initiation="), "wallet link %q", href)
	return href
}

// confirm checks the wallet's confirmation page: the merchant as its certificate
// says, the gateway that will read the card, the order and amount.
func (s *shopper) confirm(wantAmount, wantDescription string) {
	t, ctx := s.t, s.ctx
	t.Helper()
	cert := demoCert(t, s.b, "merchant-sign.pem")
	merchant := textOf(t, ctx, "#merchant")
	assert.Contains(t, merchant, cert.Subject.Organization[0], "the merchant's name from its certificate")
	assert.Contains(t, merchant, "bookshop-42", "the merchant's id from its certificate")
	assert.Contains(t, merchant, cert.Issuer.CommonName, "the merchant's CA")
	gw := textOf(t, ctx, "#gateway")
	assert.Contains(t, gw, "gw-eu-1", "the gateway that will read the card data")
	assert.Contains(t, textOf(t, ctx, "#amount"), wantAmount)
	assert.Contains(t, textOf(t, ctx, "#description"), wantDescription)
}

// pay enters the wallet passphrase on the confirmation page and pays; it returns the
// result page's outcome line.
func (s *shopper) pay(passphrase string) string {
	t, ctx := s.t, s.ctx
	t.Helper()
	fill(t, ctx, "#passphrase", passphrase)
	clickAndLoad(t, ctx, "form[action='/pay'] button[type=submit]")
	return textOf(t, ctx, "#outcome")
}

func demoCert(t *testing.T, b *webBed, name string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(b.root, "pki", name))
	require.NoError(t, err)
	certs, err := pki.ParsePEMCertificates(data)
	require.NoError(t, err)
	require.NotEmpty(t, certs)
	return certs[0]
}

// waitState waits until the order page open in ctx shows state, without the test
// reloading it (the page updates itself), and returns the state line.
func waitState(t *testing.T, ctx context.Context, state string) string {
	t.Helper()
	waitFor(t, ctx, "the order page to show "+state, "document.getElementById('state') !== null && document.getElementById('state').dataset.state === '"+state+"'")
	return textOf(t, ctx, "#state")
}

// TestBrowserPurchaseFromStorefrontThroughWallet: Alice picks a book in the storefront,
// checks out, opens the order's link in her wallet UI, which shows the merchant as
// verified from its certificate chain, the gateway, the order and amount; she gives
// her passphrase and pays; the wallet shows the approved result, and the storefront's
// order page, left open in another tab, turns to authorized by itself.
func TestBrowserPurchaseFromStorefrontThroughWallet(t *testing.T) {
	b := newWebBed(t, "alice")
	s := newShopper(t, b, "alice")
	home := pageText(t, s.ctx)
	assert.Contains(t, home, "411111******1111", "the wallet lists the card masked")
	assert.NotContains(t, home, "4111111111111111")

	orderURL := s.checkout("book", "1", "49.90", true)
	link := s.walletLink()
	assertNoPAN(t, pageText(t, s.ctx))

	// The order page stays open in a window of its own while the wallet pays in this
	// one. (A browser of its own, not a second tab: chromedp loses a tab whose page
	// reloaded itself while another tab was driven.)
	orderTab := newBrowser(t, b.pin)
	browse(t, orderTab, chromedp.Navigate(orderURL))
	assert.Equal(t, "awaiting", cdpValue(t, orderTab, chromedp.Evaluate[string]("document.getElementById('state').dataset.state")))

	browse(t, s.ctx, chromedp.Navigate(link))
	s.confirm("49.90", "Applied Cryptography")
	screenshot(t, s.ctx, "wallet-confirmation")
	outcome := s.pay(b.passphrase("alice"))
	assert.Contains(t, outcome, "Approved")
	res := pageText(t, s.ctx)
	assert.Contains(t, res, "411111******1111")
	assert.Contains(t, res, "bookshop-42")
	screenshot(t, s.ctx, "wallet-result")

	line := waitState(t, orderTab, "authorized")
	assert.NotEmpty(t, line)
	page := pageText(t, orderTab)
	assert.Contains(t, page, "49.90")
	assertNoPAN(t, page)
	screenshot(t, orderTab, "order")
}

// TestBrowserDeclinedCard: Bob's card (10.00 left) buys two books; a wrong passphrase
// is refused on the page, then with his passphrase the wallet shows the gateway's
// decline, and the storefront's order page shows the order declined.
func TestBrowserDeclinedCard(t *testing.T) {
	b := newWebBed(t, "bob")
	s := newShopper(t, b, "bob")
	orderURL := s.checkout("book", "2", "99.80", false)
	browse(t, s.ctx, chromedp.Navigate(s.walletLink()))
	s.confirm("99.80", "Applied Cryptography")
	// A wrong passphrase first: refused in words, nothing paid, the form again.
	fill(t, s.ctx, "#passphrase", "not Bob's passphrase")
	clickAndLoad(t, s.ctx, "form[action='/pay'] button[type=submit]")
	page := pageText(t, s.ctx)
	assert.Contains(t, page, "wrong passphrase for card 555555******4444")
	assert.Contains(t, page, "Nothing was paid")
	outcome := s.pay(b.passphrase("bob"))
	assert.Contains(t, outcome, "Not approved")
	assert.NotContains(t, outcome, "Approved:")
	screenshot(t, s.ctx, "wallet-declined")

	browse(t, s.ctx, chromedp.Navigate(orderURL))
	assert.Contains(t, waitState(t, s.ctx, "declined"), "Declined")
	assertNoPAN(t, pageText(t, s.ctx))
	screenshot(t, s.ctx, "order-declined")
}

// TestBrowserTamperedInitiationRefused: the order's initiation with one byte of its
// signed content changed, given to the wallet as the link's parameter and as an
// uploaded .setpay file, is refused on the page as tampered; nothing is paid, and
// the untouched link still works afterwards.
func TestBrowserTamperedInitiationRefused(t *testing.T) {
	b := newWebBed(t, "alice")
	s := newShopper(t, b, "alice")
	s.checkout("coffee", "1", "24.50", false)
	link := s.walletLink()
	u, err := url.Parse(link)
	require.NoError(t, err)
	raw, err := base64.RawURLEncoding.DecodeString(u.Query().Get("initiation"))
	require.NoError(t, err, "the link's parameter is the .setpay file, base64url")

	// One letter of the order description, inside the signed content.
	i := bytes.Index(raw, []byte("Single-origin"))
	require.GreaterOrEqual(t, i, 0, "the initiation carries the order description")
	tampered := bytes.Clone(raw)
	tampered[i] ^= 0x20 // "single-origin"

	q := u.Query()
	q.Set("initiation", base64.RawURLEncoding.EncodeToString(tampered))
	u.RawQuery = q.Encode()
	browse(t, s.ctx, chromedp.Navigate(u.String()))
	page := pageText(t, s.ctx)
	assert.Contains(t, page, "Tampered payment initiation")
	assert.Contains(t, page, "Nothing was paid")
	assert.NotContains(t, page, "Wallet passphrase", "no way to pay a tampered initiation")
	screenshot(t, s.ctx, "wallet-tampered")

	// The same tampered bytes as a file opened on the wallet's receive page.
	file := filepath.Join(t.TempDir(), "order.setpay")
	require.NoError(t, os.WriteFile(file, tampered, 0o600))
	browse(t, s.ctx, chromedp.Navigate(walletBase(b.wallets["alice"])+"/receive"))
	browse(t, s.ctx, chromedp.SetUploadFiles(chromedp.CSS("#initiation"), []string{file}))
	clickAndLoad(t, s.ctx, "form[action='/receive'] button[type=submit]")
	page = pageText(t, s.ctx)
	assert.Contains(t, page, "Tampered payment initiation")
	assert.NotContains(t, page, "Wallet passphrase")

	// The genuine initiation is still good: the refusals changed nothing.
	browse(t, s.ctx, chromedp.Navigate(link))
	s.confirm("24.50", "Single-origin coffee")
}
