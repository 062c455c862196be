package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDemoWebServesTheFaces: `setpay demo --web` prints the storefront, console and
// wallet UI URLs after its transcript and serves them until SIGTERM, which ends it
// with exit 0: the storefront and console over TLS with the merchant's certificate
// (from the demo's TLS CA), the wallet UI on loopback behind its access token. (The
// browser tests, make test-browser, pay through them.)
func TestDemoWebServesTheFaces(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo; skipped with -short")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "var")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := setpayCmd(ctx, t, dir, nil, "demo", "--var", root, "--web",
		"--shop-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0", "--wallet-listen", "127.0.0.1:0")
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	defer func() {
		if t.Failed() {
			t.Logf("demo stderr:\n%s", stderr)
		}
	}()
	got := startAnnounced(t, cmd, 2*time.Minute, "storefront on ", "console on ", "wallet UI on ")

	pool, err := readPool(filepath.Join(root, "pki", "tls-ca.pem"))
	require.NoError(t, err)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	fetch := func(url string) (*http.Response, string) {
		t.Helper()
		resp, err := client.Get(url)
		require.NoError(t, err, url)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(b)
	}
	for _, c := range []struct{ name, url, want string }{
		{"storefront", got["storefront on "], "Applied Cryptography, 2nd edition (hardcover)"},
		{"console", got["console on "], "Log in"},
		{"wallet UI", got["wallet UI on "], "411111******1111"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := fetch(c.url)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Contains(t, body, c.want)
			assert.NotEmpty(t, resp.Header.Get("Content-Security-Policy"))
			assert.NotContains(t, body, "4111111111111111")
		})
	}
	st, err := os.Stat(filepath.Join(root, "console-password"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the console password is a secret file")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, cmd.Wait(), "the demo ends cleanly on SIGTERM")
}
