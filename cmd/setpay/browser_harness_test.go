//go:build browser

package main

// The harness of the browser tests (make test-browser, build tag "browser"): the
// services a shopper and an operator use, each a process of the built binary started
// as docs/web.md says, and Debian's chromium, headless, driven over the DevTools
// protocol by chromedp.

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chromiumPath is Debian's chromium (scripts/browser-deps.sh installs it);
// SETPAY_CHROMIUM names another build.
func chromiumPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("SETPAY_CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	_, err := os.Stat(p)
	require.NoError(t, err, "chromium: run scripts/browser-deps.sh (make test-browser does)")
	return p
}

// spkiPin is the value --ignore-certificate-errors-spki-list takes for the leaf of a
// PEM chain file: base64 of the SHA-256 of its SubjectPublicKeyInfo. Chromium then
// accepts a certificate with exactly that public key (the key in the merchant's
// token) whatever its issuer, and no other: the browser does not learn to trust the
// setpay TLS CA, and a page served with any other key still fails.
func spkiPin(t *testing.T, chainFile string) string {
	t.Helper()
	data, err := os.ReadFile(chainFile)
	require.NoError(t, err)
	blk, _ := pem.Decode(data)
	require.NotNil(t, blk, "%s: no PEM certificate", chainFile)
	cert, err := x509.ParseCertificate(blk.Bytes)
	require.NoError(t, err)
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// newBrowser starts a headless chromium on a fresh profile, trusting the TLS keys
// pinned, and returns a tab's context; the browser ends with the test. The window is
// 1000x700, the size of the screenshots.
func newBrowser(t *testing.T, pins ...string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 700),
	}
	if len(pins) > 0 {
		opts = append(opts, chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(pins, ",")))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// The first run starts the browser, on the context it lives as long as (no timeout
	// there: browse bounds each step instead).
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(1000, 700)), "start chromium")
	return ctx
}

// browseTimeout bounds one browse call: a page that never comes fails the test
// instead of hanging it.
const browseTimeout = time.Minute

// browse runs steps in the tab, each call bounded by browseTimeout.
func browse(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	cdpValue(t, ctx, chromedp.Steps(steps...))
}

// cdpValue runs one action in the tab and returns its value, bounded like browse. An
// action that failed because the DOM it had looked up was replaced under it (the
// page's document was rebuilt after its load) is run again: such a failure happens
// before the action did anything.
func cdpValue[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, browseTimeout)
	defer cancel()
	for {
		v, err := chromedp.Run(sctx, a)
		if err == nil || !staleDOM(err) || sctx.Err() != nil {
			require.NoError(t, err)
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// staleDOM reports a DevTools error for a node or execution context that no longer
// exists.
func staleDOM(err error) bool {
	for _, m := range []string{"No node with given id found", "Could not find node with given id",
		"Cannot find context with specified id", "Execution context was destroyed", "does not belong to the document"} {
		if strings.Contains(err.Error(), m) {
			return true
		}
	}
	return false
}

// pageText is the visible text of the page's body.
func pageText(t *testing.T, ctx context.Context) string {
	t.Helper()
	return cdpValue(t, ctx, chromedp.Evaluate[string]("document.body.innerText"))
}

// screenshotDir is where the tests save a screenshot of each page: $SETPAY_SCREENSHOTS
// (make test-browser sets it to docs/screenshots), otherwise a temporary directory.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("SETPAY_SCREENSHOTS"); d != "" {
		require.NoError(t, os.MkdirAll(d, 0o755))
		return d
	}
	return t.TempDir()
}

// screenshot saves the top of the page (1000x700) as name.png, after checking that
// every control on it has a label (assertLabelled).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	assertLabelled(t, ctx, name)
	cdpValue(t, ctx, chromedp.Evaluate[bool]("window.scrollTo(0, 0), true"))
	png := cdpValue(t, ctx, chromedp.CaptureScreenshot())
	require.NoError(t, os.WriteFile(filepath.Join(screenshotDir(t), name+".png"), png, 0o644))
}

// unlabelledJS lists the page's visible form controls that have no accessible name:
// no <label for>, no enclosing <label>, no aria-label(ledby); a button's own text
// names it.
const unlabelledJS = `Array.from(document.querySelectorAll('input, select, textarea, button'))
  .filter(e => e.type !== 'hidden')
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby') &&
    !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map(e => e.outerHTML)`

// assertLabelled checks that every control on the page has a label, so a screen
// reader names it.
func assertLabelled(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	assert.Empty(t, cdpValue(t, ctx, chromedp.Evaluate[[]string](unlabelledJS)), "controls without a label on %s", page)
}

// waitFor polls the JavaScript predicate js in the tab until it is true, through page
// loads (an evaluation during a navigation just fails and is tried again), for at most
// browseTimeout. It is a wait for a state, never a measure of time.
func waitFor(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	deadline := time.Now().Add(browseTimeout)
	var last error
	for time.Now().Before(deadline) {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := chromedp.Run(sctx, chromedp.Evaluate[bool](js))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	require.Failf(t, "page never got there", "%s (%s): last error %v; page:\n%s", what, js, last, pageText(t, ctx))
}

// clickAndLoad clicks the element sel (a link or a form's button) and waits until the
// next page has loaded.
func clickAndLoad(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	cdpValue(t, ctx, chromedp.Evaluate[bool]("window.__setpayBefore = true"))
	browse(t, ctx, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
	waitFor(t, ctx, "the page after clicking "+sel, "window.__setpayBefore === undefined && document.readyState === 'complete'")
}

// fill types v into the input sel, replacing what it held.
func fill(t *testing.T, ctx context.Context, sel, v string) {
	t.Helper()
	browse(t, ctx, chromedp.Clear(chromedp.CSS(sel)), chromedp.SendKeys(chromedp.CSS(sel), v, chromedp.NodeVisible))
}

// jsString is s as a JavaScript string literal.
func jsString(t *testing.T, s string) string {
	t.Helper()
	q, err := json.Marshal(s)
	require.NoError(t, err)
	return string(q)
}

// textOf is the visible text of the first element sel, which must be on the page.
func textOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	js := fmt.Sprintf("(e => e === null ? null : e.innerText)(document.querySelector(%s))", jsString(t, sel))
	v := cdpValue(t, ctx, chromedp.Evaluate[*string](js))
	require.NotNil(t, v, "no %s on the page:\n%s", sel, pageText(t, ctx))
	return *v
}
