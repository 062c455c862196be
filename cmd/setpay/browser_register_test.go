//go:build browser

package main

import (
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBrowserWalletRegistersACardWithTheCCA: a CA of its own (ca init, then ca serve,
// as docs/operate.md runs them) and a wallet UI talking to it: the cardholder enters
// the card number once on the register page; every page after it shows the number
// masked only. That wallet trusts its CA's root alone, so the demo storefront's
// initiation, signed by a merchant of another hierarchy, is refused on the page as
// an untrusted merchant.
func TestBrowserWalletRegistersACardWithTheCCA(t *testing.T) {
	dir := t.TempDir()
	c := cli{t: t, dir: dir}
	c.run("hsm", "init-softhsm", "--softhsm-dir", "tokens/ca", "--tokens", "setpay-root,setpay-ca")
	c.run("hsm", "init-softhsm", "--softhsm-dir", "tokens/wallet", "--tokens", "setpay-wallet")
	c.run("ca", "init", "--softhsm-dir", "tokens/ca", "--root-token", "setpay-root", "--token", "setpay-ca",
		"--ca-dir", "ca", "--store", "sqlite:ca/ca.db")
	w := &webBed{t: t, dir: dir} // for its start: each service stopped when the test ends
	caAddr := w.start("ca", []string{"listening on "}, "ca", "serve", "--ca-dir", "ca", "--softhsm-dir", "tokens/ca", "--listen", "127.0.0.1:0")["listening on "]
	walletURL := w.start("wallet-carol", []string{"wallet UI on "}, "wallet", "ui", "--wallet", "wallets/carol",
		"--softhsm-dir", "tokens/wallet", "--token", "setpay-wallet", "--crls", filepath.Join("ca", "crls.pem"),
		"--ca", caAddr, "--ca-root", filepath.Join("ca", "root.pem"), "--ca-tls", filepath.Join("ca", "tls-ca.pem"),
		"--listen", "127.0.0.1:0")["wallet UI on "]

	ctx := newBrowser(t)
	browse(t, ctx, chromedp.Navigate(walletURL))
	browse(t, ctx, chromedp.Navigate(walletBase(walletURL)+"/register"))
	const pan = "4111111111111111"
	fill(t, ctx, "#pan", pan)
	fill(t, ctx, "#expiry", "12/30")
	fill(t, ctx, "#postal_code", "75001")
	fill(t, ctx, "#cardholder_name", "Carol Example")
	fill(t, ctx, "#passphrase", "carol keeps this to herself")
	fill(t, ctx, "#passphrase2", "carol keeps this to herself")
	clickAndLoad(t, ctx, "form[action='/register'] button[type=submit]")
	page := pageText(t, ctx)
	assert.Contains(t, page, "411111******1111", "the card, masked")
	assert.NotContains(t, page, pan, "the number is entered once and never shown again")
	screenshot(t, ctx, "wallet-registered")
	browse(t, ctx, chromedp.Navigate(walletBase(walletURL)+"/"))
	page = pageText(t, ctx)
	assert.Contains(t, page, "411111******1111")
	assert.NotContains(t, page, pan)

	// The demo's storefront, whose merchant the new CA never certified.
	b := newWebBed(t, "alice")
	s := newShopper(t, b, "alice")
	s.checkout("book", "1", "49.90", false)
	link, err := url.Parse(s.walletLink())
	require.NoError(t, err)
	browse(t, ctx, chromedp.Navigate(walletBase(walletURL)+"/receive?"+link.RawQuery))
	page = pageText(t, ctx)
	assert.Contains(t, page, "Untrusted merchant")
	assert.Contains(t, page, "Nothing was paid")
	assert.False(t, strings.Contains(page, "Wallet passphrase"), "no way to pay an untrusted merchant")
}
