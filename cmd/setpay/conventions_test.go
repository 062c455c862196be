package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExitCodesAndHelp: help goes to stdout with exit 0, usage errors exit 2 and
// runtime errors exit 1, both on stderr.
func TestExitCodesAndHelp(t *testing.T) {
	cases := []struct {
		args   []string
		code   int
		stdout string // expected in stdout ("" for nothing at all)
		stderr string // expected in stderr ("" for nothing at all)
	}{
		{[]string{"--help"}, 0, "usage: setpay <command>", ""},
		{[]string{"-h"}, 0, "usage: setpay <command>", ""},
		{[]string{"help"}, 0, "usage: setpay <command>", ""},
		{[]string{"--help"}, 0, "-log-format string", ""},
		{[]string{"help", "hsm"}, 0, "usage: setpay hsm <command>", ""},
		{[]string{"help", "hsm", "list"}, 0, "usage: setpay hsm list [flags]", ""},
		{[]string{"help", "demo"}, 0, "end-to-end purchase", ""},
		{[]string{"hsm", "--help"}, 0, "usage: setpay hsm <command>", ""},
		{[]string{"hsm", "list", "--help"}, 0, "-pin-source", ""},
		{[]string{"ca", "init", "-h"}, 0, "usage: setpay ca init [flags]", ""},
		{[]string{"gateway", "serve", "--help"}, 0, "-config", ""},

		{nil, 2, "", "no command given"},
		{[]string{"nosuch"}, 2, "", `unknown command "nosuch"`},
		{[]string{"help", "nosuch"}, 2, "", `unknown command "nosuch"`},
		{[]string{"hsm"}, 2, "", "usage: setpay hsm <command>"},
		{[]string{"hsm", "nosuch"}, 2, "", `unknown command "nosuch"`},
		{[]string{"hsm", "list", "--nosuchflag"}, 2, "", "setpay hsm list: flag provided but not defined: -nosuchflag"},
		{[]string{"hsm", "list", "stray"}, 2, "", `unexpected argument "stray"`},
		{[]string{"hsm", "keygen", "--label", "k"}, 2, "", "--token is required"},
		{[]string{"audit", "verify"}, 2, "", "--store is required"},
		{[]string{"ca", "enroll", "--role", "cardholder"}, 2, "", "--role must be merchant or gateway"},
		{[]string{"--nosuchflag", "version"}, 2, "", "flag provided but not defined"},

		{[]string{"audit", "verify", "--store", "sqlite:/nonexistent/setpay.db"}, 1, "", "no such store"},
		{[]string{"hsm", "list", "--module", "/nonexistent/libp11.so"}, 1, "", "cannot load PKCS#11 module /nonexistent/libp11.so"},
		{[]string{"gateway", "serve", "--config", "/nonexistent/gateway.yaml"}, 1, "", "read config"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(append([]string{"setpay"}, tc.args...), " "), func(t *testing.T) {
			r := runSetpay(t, t.TempDir(), nil, tc.args...)
			assert.Equal(t, tc.code, r.code, "%s", r)
			if tc.stdout == "" {
				assert.Empty(t, r.stdout)
			} else {
				assert.Contains(t, r.stdout, tc.stdout)
			}
			if tc.stderr == "" {
				assert.Empty(t, r.stderr)
			} else {
				assert.Contains(t, r.stderr, tc.stderr)
			}
			assert.NotContains(t, r.stderr, "panic:")
		})
	}
}

// TestVersionReportsModuleAndRevision: `setpay version` names the module version and
// the commit the binary was built from.
func TestVersionReportsModuleAndRevision(t *testing.T) {
	rev := sourceRevision()
	require.NotEmpty(t, rev, "the tests run in a git checkout")
	r := runSetpay(t, t.TempDir(), nil, "version")
	require.Zero(t, r.code, "%s", r)
	assert.Regexp(t, `^setpay (v\S+|\(devel\)) revision [0-9a-f]{40}( \(modified\))? go1\.\d+`, r.stdout)
	assert.Contains(t, r.stdout, "revision "+rev)
}

// TestPINSourceMustNameEnvOrFile: a PIN typed where its source belongs is refused as a
// usage error and never echoed.
func TestPINSourceMustNameEnvOrFile(t *testing.T) {
	const pin = "731946285"
	for _, args := range [][]string{
		{"hsm", "list", "--token", "setpay-ca", "--pin-source", pin},
		{"hsm", "keygen", "--token", "setpay-ca", "--label", "k", "--pin-source", pin},
		{"hsm", "init-softhsm", "--dir", "./softhsm", "--pin-source", pin},
		{"bench", "sign", "--token", "setpay-ca", "--pin-source", pin},
		{"hsm", "list", "--token", "setpay-ca", "--pin-source", "env:"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := t.TempDir()
			r := runSetpay(t, dir, nil, args...)
			assert.Equal(t, 2, r.code, "%s", r)
			assert.Contains(t, r.stderr, "--pin-source: want env:NAME or file:PATH")
			assert.NotContains(t, r.stderr, pin)
			assert.NotContains(t, r.stdout, pin)
			assert.NoDirExists(t, dir+"/softhsm", "nothing done before the refusal")
		})
	}
}

// TestLogLevelAndFormat: --log-level/--log-format, else $SETPAY_LOG_LEVEL and
// $SETPAY_LOG_FORMAT, choose the slog level and format on stderr; flags win; a wrong
// value is a usage error naming its flag or variable.
func TestLogLevelAndFormat(t *testing.T) {
	dir := t.TempDir()
	t.Run("default is warn: no debug line", func(t *testing.T) {
		r := runSetpay(t, dir, []string{"SETPAY_LOG_LEVEL", "SETPAY_LOG_FORMAT"}, "version")
		require.Zero(t, r.code, "%s", r)
		assert.Empty(t, r.stderr)
	})
	t.Run("json debug from the environment", func(t *testing.T) {
		r := runSetpay(t, dir, []string{"SETPAY_LOG_LEVEL=debug", "SETPAY_LOG_FORMAT=json"}, "version")
		require.Zero(t, r.code, "%s", r)
		line := strings.TrimSpace(r.stderr)
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "one JSON record: %q", line)
		assert.Equal(t, "DEBUG", rec["level"])
		assert.Equal(t, []any{"version"}, rec["args"])
	})
	t.Run("text debug from flags", func(t *testing.T) {
		r := runSetpay(t, dir, []string{"SETPAY_LOG_LEVEL", "SETPAY_LOG_FORMAT"}, "--log-level", "debug", "--log-format", "text", "version")
		require.Zero(t, r.code, "%s", r)
		assert.Contains(t, r.stderr, "level=DEBUG msg=setpay")
	})
	t.Run("flags win over the environment", func(t *testing.T) {
		r := runSetpay(t, dir, []string{"SETPAY_LOG_LEVEL=debug", "SETPAY_LOG_FORMAT=json"}, "--log-level", "error", "version")
		require.Zero(t, r.code, "%s", r)
		assert.Empty(t, r.stderr)
	})
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"bad level flag", nil, []string{"--log-level", "loud", "version"}, `--log-level "loud"`},
		{"bad format flag", nil, []string{"--log-format", "xml", "version"}, `--log-format "xml"`},
		{"bad level variable", []string{"SETPAY_LOG_LEVEL=loud"}, []string{"version"}, `$SETPAY_LOG_LEVEL "loud"`},
		{"bad format variable", []string{"SETPAY_LOG_FORMAT=yaml"}, []string{"version"}, `$SETPAY_LOG_FORMAT "yaml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runSetpay(t, dir, tc.env, tc.args...)
			assert.Equal(t, 2, r.code, "%s", r)
			assert.Contains(t, r.stderr, tc.want)
			assert.Empty(t, r.stdout)
		})
	}
}
