//go:build browser

package main

import (
	"context"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tabTo presses Tab until the focused element matches the CSS selector sel (at most
// 60 times, a page's worth of controls), as a keyboard user moves through a page.
func tabTo(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	js := "document.activeElement !== null && document.activeElement.matches(" + jsString(t, sel) + ")"
	for range 60 {
		if cdpValue(t, ctx, chromedp.Evaluate[bool](js)) {
			return
		}
		browse(t, ctx, chromedp.KeyEvent(kb.Tab))
	}
	require.Failf(t, "not reachable by Tab", "%s: 60 Tabs never focused it", sel)
}

// pressAndLoad presses key on the focused element and waits for the next page.
func pressAndLoad(t *testing.T, ctx context.Context, key string) {
	t.Helper()
	cdpValue(t, ctx, chromedp.Evaluate[bool]("window.__setpayBefore = true"))
	browse(t, ctx, chromedp.KeyEvent(key))
	waitFor(t, ctx, "the page after pressing a key", "window.__setpayBefore === undefined && document.readyState === 'complete'")
}

// TestBrowserKeyboardOnlyPurchase: the whole purchase with the keyboard alone (Tab to
// a control, Enter to use it, typing into the focused field): the storefront's "Add
// to cart" and "Check out", the order page's wallet link, the wallet's passphrase and
// "Pay"; the wallet shows the approved result.
func TestBrowserKeyboardOnlyPurchase(t *testing.T) {
	b := newWebBed(t, "alice")
	s := newShopper(t, b, "alice")
	ctx := s.ctx
	browse(t, ctx, chromedp.Navigate(b.storefront))

	tabTo(t, ctx, "form:has(input[name=offer][value=book]) button[type=submit]")
	pressAndLoad(t, ctx, kb.Enter)
	assert.Contains(t, cdpValue(t, ctx, chromedp.Location()), "/cart")
	assert.Contains(t, textOf(t, ctx, "#total"), "49.90")

	tabTo(t, ctx, "#checkout")
	pressAndLoad(t, ctx, kb.Enter)
	assert.Contains(t, cdpValue(t, ctx, chromedp.Location()), "/order/")

	tabTo(t, ctx, "#wallet-link")
	pressAndLoad(t, ctx, kb.Enter)
	s.confirm("49.90", "Applied Cryptography")

	tabTo(t, ctx, "#passphrase")
	browse(t, ctx, chromedp.KeyEvent(b.passphrase("alice")))
	pressAndLoad(t, ctx, kb.Enter) // Enter in the field submits its form
	assert.Contains(t, textOf(t, ctx, "#outcome"), "Approved")
}
