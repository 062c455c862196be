package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
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
		{"hsm", "init-softhsm", "--softhsm-dir", "./softhsm", "--pin-source", pin},
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
	t.Run("default is info: no debug line", func(t *testing.T) {
		r := runSetpay(t, dir, []string{"SETPAY_LOG_LEVEL", "SETPAY_LOG_FORMAT"}, "version")
		require.Zero(t, r.code, "%s", r)
		assert.Empty(t, r.stderr)
	})
	t.Run("default is info: an info line", func(t *testing.T) {
		unset := []string{"SETPAY_LOG_LEVEL", "SETPAY_LOG_FORMAT", "SOFTHSM2_CONF"}
		r := runSetpay(t, dir, unset, "hsm", "init-softhsm", "--softhsm-dir", "./softhsm", "--tokens", "logs")
		require.Zero(t, r.code, "%s", r)
		r = runSetpay(t, dir, unset, "hsm", "keygen", "--softhsm-dir", "./softhsm", "--token", "logs", "--label", "k")
		require.Zero(t, r.code, "%s", r)
		assert.Regexp(t, `(?m)^time=\S+ level=INFO msg="generated key" token=logs `, r.stderr)
		assert.Regexp(t, `^pkcs11:token=logs;object=k;`, r.stdout, "logs stay on stderr")
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

// flagUse is one flag of one command as its --help shows it.
type flagUse struct {
	cmd, name, placeholder, usage string // placeholder: "" for a boolean flag
}

// allFlags runs every command's --help in process and collects its flags (the global
// flags under the command name "setpay").
func allFlags(t *testing.T) []flagUse {
	t.Helper()
	var uses []flagUse
	var walk func(prefix []string, cmds map[string]*command)
	walk = func(prefix []string, cmds map[string]*command) {
		for name, c := range cmds {
			path := append(append([]string{}, prefix...), name)
			if c.sub != nil {
				walk(path, c.sub)
				continue
			}
			var stdout, stderr strings.Builder
			env := &cliEnv{stdout: &stdout, stderr: &stderr, logger: slog.New(slog.DiscardHandler)}
			err := dispatch(context.Background(), env, commands(), append(path, "--help"), "setpay")
			require.ErrorIs(t, err, errHelp, "setpay %s --help", strings.Join(path, " "))
			uses = append(uses, parseFlagHelp("setpay "+strings.Join(path, " "), stdout.String())...)
		}
	}
	walk(nil, commands())
	var stdout strings.Builder
	require.Zero(t, run(context.Background(), []string{"--help"}, &stdout, io.Discard, func(string) string { return "" }))
	_, global, ok := strings.Cut(stdout.String(), "global flags")
	require.True(t, ok, "setpay --help lists the global flags")
	uses = append(uses, parseFlagHelp("setpay", global)...)
	require.NotEmpty(t, uses)
	return uses
}

// parseFlagHelp reads flag.PrintDefaults output: "  -name placeholder" then the usage
// on lines indented "    \t".
func parseFlagHelp(cmd, help string) []flagUse {
	var uses []flagUse
	for _, line := range strings.Split(help, "\n") {
		switch {
		case strings.HasPrefix(line, "  -"):
			name, placeholder, _ := strings.Cut(strings.TrimPrefix(line, "  -"), " ")
			uses = append(uses, flagUse{cmd: cmd, name: name, placeholder: placeholder})
		case strings.HasPrefix(line, "    \t") && len(uses) > 0:
			u := &uses[len(uses)-1]
			u.usage = strings.TrimSpace(u.usage + " " + strings.TrimPrefix(line, "    \t"))
		}
	}
	return uses
}

// flagMeanings is the CLI vocabulary: every flag name that more than one command
// defines, and every name with a fixed meaning, has one entry, and each command's usage
// text for it must say so (a keyword, case-insensitive). A flag is boolean or not
// everywhere alike.
var flagMeanings = map[string]struct {
	keyword string
	isBool  bool
}{
	"softhsm-dir":     {keyword: "SoftHSM2 dev token directory"},
	"ca-dir":          {keyword: "CA directory"},
	"ca":              {keyword: "CA service address"},
	"dir":             {keyword: "directory to write"},
	"wallet":          {keyword: "wallet directory"},
	"out":             {keyword: "file"},
	"config":          {keyword: "configuration file"},
	"json":            {keyword: "JSON", isBool: true},
	"module":          {keyword: "PKCS#11 module"},
	"token":           {keyword: "token label"},
	"token-serial":    {keyword: "token serial number"},
	"token-slot":      {keyword: "slot"},
	"pin-source":      {keyword: "PIN"},
	"root-token":      {keyword: "token holding the root key"},
	"store":           {keyword: "store"},
	"issuer":          {keyword: "issuing CA"},
	"ca-root":         {keyword: "root certificate"},
	"ca-tls":          {keyword: "CA service's TLS"},
	"ca-name":         {keyword: "TLS name of the CA service"},
	"id":              {keyword: "id"},
	"secret-file":     {keyword: "file holding the enrollment secret"},
	"passphrase-file": {keyword: "file holding the wallet passphrase"},
	"kx-alg":          {keyword: "key-exchange key algorithm"},
	"label":           {keyword: "key label"},
	"request":         {keyword: "request"},
	"brand":           {keyword: "brand"},
	"chart":           {keyword: ".svg"},
	"concurrency":     {keyword: "e.g. 1,"},
	"duration":        {keyword: "time"},
	"listen":          {keyword: "address to listen on"},
	"crls":            {keyword: "current CRLs"},
	"merchant-ca":     {keyword: "merchant's TLS certificate"},
	"log-level":       {keyword: "log level"},
	"log-format":      {keyword: "log format"},
	"xid":             {keyword: "transaction ID (XID)"},
	"amount":          {keyword: "minor units"},
	"batch":           {keyword: "batch"},
	"request-id":      {keyword: "retries"},
	"usage":           {keyword: "may do"},
	"ca-chain":        {keyword: "CA certificates"},
	"force":           {keyword: "replace", isBool: true},
}

// dirFlags are the flags that name a directory; no other flag may take one.
var dirFlags = map[string]bool{"softhsm-dir": true, "ca-dir": true, "dir": true, "wallet": true, "var": true}

// TestFlagNamesHaveOneMeaning: one flag name means one thing across every command
// (issue 11, operator conventions): --softhsm-dir the SoftHSM dev directory, --ca-dir
// the CA directory, --ca only the CA service's address, --dir the directory a party's
// files go into, --wallet the wallet, --out one file and never a directory, --json a
// switch to machine-readable output.
func TestFlagNamesHaveOneMeaning(t *testing.T) {
	uses := allFlags(t)
	byName := map[string][]flagUse{}
	for _, u := range uses {
		byName[u.name] = append(byName[u.name], u)
	}
	for name, us := range byName {
		m, known := flagMeanings[name]
		if len(us) > 1 {
			assert.True(t, known, "--%s is defined by %d commands (%s) but has no entry in flagMeanings", name, len(us), us[0].cmd)
		}
		for _, u := range us {
			assert.NotContains(t, u.placeholder, " ", "%s --%s: a backquoted word in the usage became its placeholder", u.cmd, name)
			if !known {
				continue
			}
			assert.Contains(t, strings.ToLower(u.usage), strings.ToLower(m.keyword), "%s --%s: usage %q", u.cmd, name, u.usage)
			assert.Equal(t, m.isBool, u.placeholder == "", "%s --%s: boolean is %v everywhere", u.cmd, name, m.isBool)
		}
	}
	for _, u := range uses {
		if strings.Contains(strings.ToLower(u.usage), "director") {
			assert.True(t, dirFlags[u.name], "%s --%s takes a directory: use one of the directory flags (--softhsm-dir, --ca-dir, --dir, --wallet)", u.cmd, u.name)
		}
	}
	// The renames of issue 11: the old spellings are gone.
	for _, old := range []struct{ cmd, name string }{
		{"setpay hsm init-softhsm", "dir"}, {"setpay ca init", "out"}, {"setpay ca crl", "ca"},
		{"setpay gateway register", "out"}, {"setpay merchant register", "out"}, {"setpay wallet register", "out"},
	} {
		for _, u := range byName[old.name] {
			assert.NotEqual(t, old.cmd, u.cmd, "%s still defines --%s", old.cmd, old.name)
		}
	}
}
