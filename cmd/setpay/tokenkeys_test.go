package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// listTokens is `setpay hsm list --softhsm-dir dir --json`.
func listTokens(t *testing.T, softhsmDir string) []tokenJSON {
	t.Helper()
	r := runSetpay(t, t.TempDir(), []string{"SOFTHSM2_CONF"}, "hsm", "list", "--softhsm-dir", softhsmDir, "--json")
	require.Zero(t, r.code, "%s", r)
	var ts []tokenJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ts), "hsm list --json prints JSON: %q", r.stdout)
	return ts
}

func tokenByLabel(t *testing.T, ts []tokenJSON, label string) tokenJSON {
	t.Helper()
	for _, tok := range ts {
		if tok.Label == label {
			return tok
		}
	}
	require.Failf(t, "no such token", "%q not in %+v", label, ts)
	return tokenJSON{}
}

// gatewayWithTokenKeys writes the demo's gateway.yaml into a new directory with its
// token keys replaced by change (module, token and pin_source cleared first), and
// returns the file.
func gatewayWithTokenKeys(t *testing.T, root string, change func(dir string, tc *tokenConfig)) string {
	t.Helper()
	c := readConfig[gatewayConfig](t, filepath.Join(root, "gateway.yaml"))
	c.Listen, c.MetricsListen = "127.0.0.1:0", ""
	dir := t.TempDir()
	c.tokenConfig = tokenConfig{}
	change(dir, &c.tokenConfig)
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, c)
	return cfg
}

// TestServeConfigTokenKeys: a gateway configuration with softhsm_dir (relative to the
// file) and neither module, pin_source nor SOFTHSM2_CONF in the environment starts; so
// does one that names its token by token_serial or token_slot, with max_sessions
// (issue 11, item 5).
func TestServeConfigTokenKeys(t *testing.T) {
	root := demoFixture(t)
	softhsmDir := filepath.Join(root, "softhsm")
	gw := tokenByLabel(t, listTokens(t, softhsmDir), "setpay-gateway")
	require.NotEmpty(t, gw.Serial)
	slot := int(gw.Slot)

	for _, tc := range []struct {
		name string
		keys func(dir string, tc *tokenConfig)
	}{
		{"softhsm_dir and token label", func(dir string, tc *tokenConfig) {
			rel, err := filepath.Rel(dir, softhsmDir)
			require.NoError(t, err)
			tc.SoftHSMDir, tc.Token = rel, "setpay-gateway"
		}},
		{"token_serial", func(_ string, tc *tokenConfig) {
			tc.SoftHSMDir, tc.TokenSerial, tc.MaxSessions = softhsmDir, gw.Serial, 4
		}},
		{"token_slot", func(_ string, tc *tokenConfig) { tc.SoftHSMDir, tc.TokenSlot = softhsmDir, &slot }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := gatewayWithTokenKeys(t, root, tc.keys)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cmd := setpayCmd(ctx, t, filepath.Dir(cfg), []string{"SOFTHSM2_CONF", "SETPAY_PIN"}, "gateway", "serve", "--config", cfg)
			var stderr lockedBuffer
			cmd.Stderr = &stderr
			addr := startServer(t, cmd, 30*time.Second)
			assert.NotEmpty(t, addr)
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			assert.NoError(t, cmd.Wait(), "%s", stderr.String())
			assert.NotContains(t, stderr.String(), "panic:")
		})
	}
}

// TestServeConfigTokenKeyMistakes: a token named twice, an unknown serial and a
// softhsm_dir that is not one are refused at start, naming the field or the token
// (issue 11, item 5).
func TestServeConfigTokenKeyMistakes(t *testing.T) {
	root := demoFixture(t)
	softhsmDir := filepath.Join(root, "softhsm")
	zero := 0
	for _, tc := range []struct {
		name string
		keys func(dir string, tc *tokenConfig)
		want []string
	}{
		{"token and token_serial", func(_ string, tc *tokenConfig) {
			tc.SoftHSMDir, tc.Token, tc.TokenSerial = softhsmDir, "setpay-gateway", "0123456789abcdef"
		}, []string{"token_serial: select the token by exactly one of token, token_serial and token_slot"}},
		{"token_serial and token_slot", func(_ string, tc *tokenConfig) {
			tc.SoftHSMDir, tc.TokenSerial, tc.TokenSlot = softhsmDir, "0123456789abcdef", &zero
		}, []string{"token_slot: select the token by exactly one"}},
		{"no token at all", func(_ string, tc *tokenConfig) { tc.SoftHSMDir = softhsmDir }, []string{"token: required"}},
		{"unknown token_serial", func(_ string, tc *tokenConfig) { tc.SoftHSMDir, tc.TokenSerial = softhsmDir, "0123456789abcdef" },
			[]string{"serial=0123456789abcdef", "token not found"}},
		{"softhsm_dir that is not one", func(dir string, tc *tokenConfig) { tc.SoftHSMDir, tc.Token = "no-such-dir", "setpay-gateway" },
			[]string{"softhsm_dir: not a SoftHSM2 dev token directory", filepath.Join("no-such-dir", "softhsm2.conf")}},
		{"neither module nor softhsm_dir", func(_ string, tc *tokenConfig) { tc.Token, tc.PINSource = "setpay-gateway", "env:SETPAY_PIN" },
			[]string{"module: required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := gatewayWithTokenKeys(t, root, tc.keys)
			r := runSetpay(t, filepath.Dir(cfg), []string{"SOFTHSM2_CONF"}, "gateway", "serve", "--config", cfg)
			assert.Equal(t, 1, r.code, "%s", r)
			assert.NotContains(t, r.stderr, "panic:")
			assert.NotContains(t, r.stdout, "listening on")
			for _, w := range tc.want {
				assert.Contains(t, r.stderr, w)
			}
		})
	}
}

// TestCAYAMLRecordsTheTokenKeys: `ca init --softhsm-dir` records softhsm_dir in
// ca.yaml (relative to it), so a ca command run from another directory with only
// --ca-dir and no SOFTHSM2_CONF finds the CA's token; --token-serial selects it too
// (issue 11, item 5).
func TestCAYAMLRecordsTheTokenKeys(t *testing.T) {
	home := t.TempDir()
	noConf := []string{"SOFTHSM2_CONF"}
	run := func(dir string, args ...string) result {
		t.Helper()
		r := runSetpay(t, dir, noConf, args...)
		require.Zero(t, r.code, "setpay %s\n%s", strings.Join(args, " "), r)
		return r
	}
	run(home, "hsm", "init-softhsm", "--softhsm-dir", "./var/softhsm", "--tokens", "setpay-root,setpay-ca")
	run(home, "ca", "init", "--softhsm-dir", "./var/softhsm", "--ca-dir", "./var/ca", "--store", "sqlite:./var/setpay.db")
	b, err := os.ReadFile(filepath.Join(home, "var", "ca", "ca.yaml"))
	require.NoError(t, err)
	var fc caFileConfig
	require.NoError(t, loadYAML(filepath.Join(home, "var", "ca", "ca.yaml"), &fc))
	assert.Equal(t, filepath.Join("..", "softhsm"), fc.SoftHSMDir, "ca.yaml:\n%s", b)
	assert.Equal(t, "setpay-ca", fc.Token)

	elsewhere := t.TempDir()
	caDir := filepath.Join(home, "var", "ca")
	crl := run(elsewhere, "ca", "crl", "--ca-dir", caDir, "--issuer", "mca")
	assert.Contains(t, crl.stdout, "-----BEGIN X509 CRL-----")

	ca := tokenByLabel(t, listTokens(t, filepath.Join(home, "var", "softhsm")), "setpay-ca")
	crl = run(elsewhere, "ca", "crl", "--ca-dir", caDir, "--issuer", "pca", "--token-serial", ca.Serial)
	assert.Contains(t, crl.stdout, "-----BEGIN X509 CRL-----")

	r := runSetpay(t, elsewhere, noConf, "ca", "crl", "--ca-dir", caDir, "--token", "setpay-ca", "--token-serial", ca.Serial)
	assert.Equal(t, 2, r.code, "%s", r)
	assert.Contains(t, r.stderr, "give only one of --token, --token-serial and --token-slot")
}
