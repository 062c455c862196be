package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// demoVar is one `setpay demo` run shared by the tests of a test binary: real tokens,
// keys, certificates, stores, and the gateway.yaml and merchant.yaml it exports.
var demoVar struct {
	once sync.Once
	dir  string
	res  result
}

func demoFixture(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the demo once; skipped with -short")
	}
	setpayBinary(t)
	demoVar.once.Do(func() {
		demoVar.dir = filepath.Join(testBinary.dir, "demo")
		demoVar.res = runSetpay(t, testBinary.dir, nil, "demo", "--var", demoVar.dir)
	})
	require.Zero(t, demoVar.res.code, "setpay demo\n%s", demoVar.res)
	return demoVar.dir
}

func readConfig[T any](t *testing.T, path string) T {
	t.Helper()
	var v T
	require.NoError(t, loadYAML(path, &v))
	return v
}

func writeConfig(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o600))
}

// TestServeReportsTokenAndConfigErrors: each token or configuration mistake makes
// `gateway serve` and `merchant serve` exit 1 with the cause on stderr (the same
// words `hsm list` uses for the same module, token and PIN), never a panic.
func TestServeReportsTokenAndConfigErrors(t *testing.T) {
	root := demoFixture(t)
	conf := "SOFTHSM2_CONF=" + filepath.Join(root, "softhsm", "softhsm2.conf")
	module := readConfig[gatewayConfig](t, filepath.Join(root, "gateway.yaml")).Module
	pinFile := filepath.Join(root, "softhsm", "user-pin")
	wrongPIN := filepath.Join(t.TempDir(), "wrong-pin")
	require.NoError(t, os.WriteFile(wrongPIN, []byte("not-the-pin\n"), 0o600))

	cases := []struct {
		name   string
		change func(p *partyConfig)
		env    []string
		want   []string // on stderr
		// hsmList, when set, is `hsm list` with the same mistake: its error line must
		// appear in the service's stderr too.
		hsmList []string
	}{
		{name: "wrong PIN", change: func(p *partyConfig) { p.PINSource = "file:" + wrongPIN },
			want: []string{"PIN incorrect"}, hsmList: []string{"--pin-source", "file:" + wrongPIN}},
		{name: "unset PIN variable", change: func(p *partyConfig) { p.PINSource = "env:SETPAY_TEST_UNSET_PIN" }, env: []string{"SETPAY_TEST_UNSET_PIN"},
			want: []string{"SETPAY_TEST_UNSET_PIN is not set"}, hsmList: []string{"--pin-source", "env:SETPAY_TEST_UNSET_PIN"}},
		{name: "wrong module path", change: func(p *partyConfig) { p.Module = "/nonexistent/libpkcs11.so" },
			want: []string{"/nonexistent/libpkcs11.so"}, hsmList: []string{"--module", "/nonexistent/libpkcs11.so"}},
		{name: "unknown token label", change: func(p *partyConfig) { p.Token = "no-such-token" },
			want: []string{"no-such-token", "token not found"}, hsmList: []string{"--token", "no-such-token"}},
		{name: "missing module", change: func(p *partyConfig) { p.Module = "" }, want: []string{"module: required"}},
		{name: "missing certificate file", change: func(p *partyConfig) { p.SignCert = filepath.Join(root, "pki", "missing.pem") },
			want: []string{"sign_cert: ", "missing.pem", "no such file"}},
		{name: "missing CA chain file", change: func(p *partyConfig) { p.CAChain = []string{filepath.Join(root, "pki", "gone.pem")} },
			want: []string{"ca_chain[0]: ", "gone.pem"}},
		{name: "no SOFTHSM2_CONF", change: func(*partyConfig) {}, env: []string{"SOFTHSM2_CONF"},
			want: []string{"SOFTHSM2_CONF is not set"}, hsmList: []string{}},
	}
	services := []struct {
		name string
		edit func(t *testing.T, dst string, change func(*partyConfig))
	}{
		{"gateway", func(t *testing.T, dst string, change func(*partyConfig)) {
			c := readConfig[gatewayConfig](t, filepath.Join(root, "gateway.yaml"))
			change(&c.partyConfig)
			writeConfig(t, dst, c)
		}},
		{"merchant", func(t *testing.T, dst string, change func(*partyConfig)) {
			c := readConfig[merchantConfig](t, filepath.Join(root, "merchant.yaml"))
			change(&c.partyConfig)
			writeConfig(t, dst, c)
		}},
	}
	for _, svc := range services {
		for _, tc := range cases {
			t.Run(svc.name+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				cfg := filepath.Join(dir, svc.name+".yaml")
				svc.edit(t, cfg, func(p *partyConfig) {
					p.Listen, p.MetricsListen = "127.0.0.1:0", ""
					tc.change(p)
				})
				env := append([]string{conf}, tc.env...)
				r := runSetpay(t, dir, env, svc.name, "serve", "--config", cfg)
				assert.Equal(t, 1, r.code, "%s", r)
				assert.NotContains(t, r.stderr, "panic:")
				assert.NotContains(t, r.stdout, "listening on")
				for _, w := range tc.want {
					assert.Contains(t, r.stderr, w)
				}
				if tc.hsmList == nil {
					return
				}
				args := append([]string{"hsm", "list", "--module", module, "--token", "setpay-" + svc.name, "--pin-source", "file:" + pinFile}, tc.hsmList...)
				l := runSetpay(t, dir, env, args...)
				require.Equal(t, 1, l.code, "hsm list with the same mistake fails too\n%s", l)
				line := strings.TrimPrefix(strings.TrimSpace(l.stderr), "setpay: ")
				require.NotEmpty(t, line)
				assert.Contains(t, r.stderr, line, "the service names the cause as `hsm list` does")
			})
		}
	}
}

// TestServeStartsAndStopsOnTheDemoConfig: the demo's own configuration serves, its
// metrics carry setpay_build_info with the revision, and SIGTERM stops the service with
// exit 0 (the baseline the error cases differ from).
func TestServeStartsAndStopsOnTheDemoConfig(t *testing.T) {
	root := demoFixture(t)
	dir := t.TempDir()
	c := readConfig[gatewayConfig](t, filepath.Join(root, "gateway.yaml"))
	c.Listen, c.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := setpayCmd(ctx, t, dir, []string{"SOFTHSM2_CONF=" + filepath.Join(root, "softhsm", "softhsm2.conf")}, "gateway", "serve", "--config", cfg)
	var out strings.Builder
	cmd.Stderr = &out
	_, metricsAddr := startServerAddrs(t, cmd, 30*time.Second)
	require.NotEmpty(t, metricsAddr, "the service announces its metrics address")
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, err)
	assert.Regexp(t, `setpay_build_info\{[^}]*revision="`+regexp.QuoteMeta(sourceRevision())+`"[^}]*\} 1`, string(body))
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, cmd.Wait(), "%s", out.String())
}
