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

	"github.com/setpay/setpay/pki"
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

// TestCAFileConfigCRLValidity: ca.yaml's crl_validity takes a positive Go duration per
// known CA; anything else is refused, naming the field.
func TestCAFileConfigCRLValidity(t *testing.T) {
	valid := func() caFileConfig {
		return caFileConfig{Store: "sqlite:setpay.db", RootToken: "setpay-root", tokenConfig: tokenConfig{Token: "setpay-ca"},
			CRLValidity: map[string]string{"root": "720h", "brand": "168h", "cca": "24h", "mca": "24h", "pca": "12h"}}
	}
	runConfigCases(t, valid, (*caFileConfig).validate, []configCase[caFileConfig]{
		{"not a duration", func(c *caFileConfig) { c.CRLValidity["mca"] = "a day" }, []string{"crl_validity.mca"}},
		{"zero", func(c *caFileConfig) { c.CRLValidity["root"] = "0s" }, []string{"crl_validity.root"}},
		{"negative", func(c *caFileConfig) { c.CRLValidity["brand"] = "-1h" }, []string{"crl_validity.brand"}},
		{"unknown CA", func(c *caFileConfig) { c.CRLValidity["shop"] = "1h" }, []string{"crl_validity.shop"}},
		{"not a CA", func(c *caFileConfig) { c.CRLValidity["merchant"] = "1h" }, []string{"crl_validity.merchant"}},
	})
	v := valid()
	got := v.crlValidities()
	assert.Equal(t, 720*time.Hour, got[pki.RoleRoot])
	assert.Equal(t, 12*time.Hour, got[pki.RolePCA])
	assert.Equal(t, map[string]string{"root": "720h0m0s", "brand": "168h0m0s", "cca": "24h0m0s", "mca": "24h0m0s", "pca": "24h0m0s"},
		defaultCRLValidity(), "what `ca init` writes: long root and brand CRLs")
}

// TestPartyConfigCRLCA: crl_ca needs an address and the CA's TLS anchor, and may
// replace the crls files or come with them; neither is refused.
func TestPartyConfigCRLCA(t *testing.T) {
	valid := func() partyConfig {
		p := validParty()
		p.CRLCA = crlCAConfig{Address: "127.0.0.1:7440", TLSCA: "tls-ca.pem"}
		return p
	}
	runConfigCases(t, valid, (*partyConfig).validate, []configCase[partyConfig]{
		{"crl_ca without tls_ca", func(c *partyConfig) { c.CRLCA.TLSCA = "" }, []string{"crl_ca.tls_ca"}},
		{"crl_ca without address", func(c *partyConfig) { c.CRLCA.Address = "" }, []string{"crl_ca.address"}},
		{"crl_ca address without port", func(c *partyConfig) { c.CRLCA.Address = "ca.example" }, []string{"crl_ca.address"}},
		{"neither crls nor crl_ca", func(c *partyConfig) { c.CRLs, c.CRLCA = nil, crlCAConfig{} }, []string{"crls"}},
	})
	only := valid()
	only.CRLs = nil
	assert.NoError(t, only.validate(), "crl_ca alone is enough")
	only.resolvePaths("/etc/setpay")
	assert.Equal(t, "/etc/setpay/tls-ca.pem", only.CRLCA.TLSCA, "tls_ca is relative to the config file")
}
