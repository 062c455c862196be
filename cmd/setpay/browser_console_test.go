//go:build browser

package main

import (
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBrowserConsoleRefundAndBatchClose: an operator logs in to the merchant's console
// (HTTPS with the merchant's token key) and, on an order Alice's wallet bought, opens
// a batch, captures the order into it, refunds part of it and closes the batch; each
// page shows the gateway's signed answer: the captured and refunded amounts and the
// batch's totals. No page shows a card number.
func TestBrowserConsoleRefundAndBatchClose(t *testing.T) {
	b := newWebBed(t)
	b.buy("alice", "book") // authorization only: 49.90 EUR
	ctx := newBrowser(t, b.pin)

	browse(t, ctx, chromedp.Navigate(b.console))
	require.Contains(t, pageText(t, ctx), "Log in", "the console asks for a login first")
	assert.NotContains(t, pageText(t, ctx), "49.90", "no order before the login")
	screenshot(t, ctx, "console-login")

	// A wrong password is refused in words, and lets nobody in.
	fill(t, ctx, "#name", b.operator)
	fill(t, ctx, "#password", "not the password")
	clickAndLoad(t, ctx, "form[action='/login'] button[type=submit]")
	assert.NotContains(t, pageText(t, ctx), "Settlement batches")
	assert.Contains(t, pageText(t, ctx), "Wrong name or password.")

	fill(t, ctx, "#name", b.operator)
	fill(t, ctx, "#password", b.password)
	clickAndLoad(t, ctx, "form[action='/login'] button[type=submit]")
	orders := textOf(t, ctx, "table.orders")
	assert.Contains(t, orders, "book")
	assert.Contains(t, orders, "49.90 EUR")
	assert.Contains(t, orders, "authorized")
	screenshot(t, ctx, "console")

	const batch = "batch-browser-1"
	fill(t, ctx, "#batch", batch)
	clickAndLoad(t, ctx, "button[name=action][value=open]")
	answer := textOf(t, ctx, "section.outcome")
	assert.Contains(t, answer, batch)
	assert.Contains(t, answer, "Gateway answer")

	browse(t, ctx, chromedp.Navigate(b.console))
	clickAndLoad(t, ctx, "table.orders tbody a")
	assert.Contains(t, textOf(t, ctx, "#order-state"), "authorized")
	fill(t, ctx, "#capture-batch", batch)
	clickAndLoad(t, ctx, "#form-capture button[type=submit]")
	answer = textOf(t, ctx, "section.outcome")
	assert.Regexp(t, `Captured\s+49\.90 EUR`, answer)

	fill(t, ctx, "#credit-amount", "1000")
	fill(t, ctx, "#credit-batch", batch)
	clickAndLoad(t, ctx, "#form-credit button[type=submit]")
	answer = textOf(t, ctx, "section.outcome")
	assert.Regexp(t, `Refunded\s+10\.00 EUR`, answer)
	assert.Regexp(t, `Captured\s+49\.90 EUR`, answer)
	screenshot(t, ctx, "console-refund")

	browse(t, ctx, chromedp.Navigate(b.console))
	fill(t, ctx, "#batch", batch)
	clickAndLoad(t, ctx, "button[name=action][value=close]")
	totals := textOf(t, ctx, "table.totals")
	assert.Contains(t, totals, batch)
	assert.Contains(t, totals, "49.90")
	assert.Contains(t, totals, "10.00")
	screenshot(t, ctx, "console-batch")
	assertNoPAN(t, pageText(t, ctx))
}

// assertNoPAN checks a merchant page's text holds none of the demo's card numbers,
// in clear or with its first six digits.
func assertNoPAN(t *testing.T, text string) {
	t.Helper()
	for _, pan := range demoPANs {
		assert.NotContains(t, text, pan)
		assert.NotContains(t, text, pan[:6])
	}
}
