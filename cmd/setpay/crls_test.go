package main

import (
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lockedBuffer collects a child's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServeReadsCRLsAgainOnSIGHUP: a running gateway reads its CRL files again on
// SIGHUP (and every crl_refresh), keeps serving on the CRLs it holds when the files go
// bad, and exposes each CA's CRL nextUpdate and its own certificates' expiry.
func TestServeReadsCRLsAgainOnSIGHUP(t *testing.T) {
	root := demoFixture(t)
	dir := t.TempDir()
	c := readConfig[gatewayConfig](t, filepath.Join(root, "gateway.yaml"))
	// A copy of the CRL bundle the test may spoil; an hour between refreshes, so only
	// the signals below make the gateway read it.
	crlFile := filepath.Join(dir, "crls.pem")
	b, err := os.ReadFile(c.CRLs[0])
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(crlFile, b, 0o600))
	c.CRLs, c.CRLRefresh = []string{crlFile}, "1h"
	c.Listen, c.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, c)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := setpayCmd(ctx, t, dir, []string{"SOFTHSM2_CONF=" + filepath.Join(root, "softhsm", "softhsm2.conf"), "SETPAY_LOG_LEVEL=info"},
		"gateway", "serve", "--config", cfg)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	_, metricsAddr := startServerAddrs(t, cmd, 30*time.Second)
	require.NotEmpty(t, metricsAddr)

	scrape := func() string {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, resp.Body.Close())
		require.NoError(t, err)
		return string(body)
	}
	m := scrape()
	for _, ca := range []string{"Root CA", "Brand CA", "Cardholder CA", "Merchant CA", "Payment Gateway CA"} {
		assert.Regexp(t, `setpay_crl_next_update_timestamp_seconds\{issuer="[^"]*`+ca+`[^"]*"\} [0-9.e+]+`, m, "the %s CRL's nextUpdate is exported", ca)
	}
	assert.Contains(t, m, `setpay_certificate_not_after_timestamp_seconds{certificate="signature"}`)
	assert.Contains(t, m, `setpay_crl_last_refresh_timestamp_seconds`)

	// The files go bad (an operator's half-finished copy): SIGHUP reads them, the
	// gateway says so and keeps the CRLs it holds.
	require.NoError(t, os.WriteFile(crlFile, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte("not a CRL")}), 0o600))
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "CRL refresh failed; serving on the CRLs held") },
		20*time.Second, 20*time.Millisecond, "stderr:\n%s", stderr.String())
	assert.Contains(t, stderr.String(), "SIGHUP: reading the CRL files again")
	assert.Contains(t, stderr.String(), crlFile, "the log names the file")
	assert.Regexp(t, `setpay_crl_next_update_timestamp_seconds\{issuer="[^"]*Merchant CA[^"]*"\}`, scrape(), "the held CRLs are still in use")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, cmd.Wait(), "stderr:\n%s", stderr.String())
}
