//go:build browser

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBrowserDemoWeb: `setpay demo --web` prints the storefront, console and wallet UI
// URLs after its transcript and serves them until interrupted: Alice buys the coffee
// (a sale) from the storefront through the wallet UI, the operator logs in with the
// password the demo wrote and sees the order captured, and SIGTERM ends the demo with
// exit 0.
func TestBrowserDemoWeb(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "var")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := setpayCmd(ctx, t, dir, nil, "demo", "--var", root, "--web",
		"--shop-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0", "--wallet-listen", "127.0.0.1:0")
	log := &lockedBuffer{}
	cmd.Stderr = log
	defer func() {
		if t.Failed() {
			t.Logf("demo stderr:\n%s", log)
		}
	}()
	got := startAnnounced(t, cmd, 2*time.Minute, "storefront on ", "console on ", "wallet UI on ")
	b := &webBed{t: t, root: root, dir: dir, storefront: got["storefront on "], console: got["console on "],
		wallets: map[string]string{"alice": got["wallet UI on "]}, pin: spkiPin(t, filepath.Join(root, "pki", "merchant-tls.pem"))}

	s := newShopper(t, b, "alice")
	orderURL := s.checkout("coffee", "1", "24.50", false)
	browse(t, s.ctx, chromedp.Navigate(s.walletLink()))
	s.confirm("24.50", "Single-origin coffee")
	assert.Contains(t, s.pay(b.passphrase("alice")), "Approved")
	browse(t, s.ctx, chromedp.Navigate(orderURL))
	waitState(t, s.ctx, "captured")

	pw, err := os.ReadFile(filepath.Join(root, "console-password"))
	require.NoError(t, err)
	op := newBrowser(t, b.pin)
	browse(t, op, chromedp.Navigate(b.console))
	fill(t, op, "#name", demoConsoleUser)
	fill(t, op, "#password", strings.TrimSpace(string(pw)))
	clickAndLoad(t, op, "form[action='/login'] button[type=submit]")
	orders := textOf(t, op, "table.orders")
	assert.Contains(t, orders, "24.50 EUR")
	assert.Contains(t, orders, "captured")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, cmd.Wait(), "the demo ends cleanly on SIGTERM")
}
