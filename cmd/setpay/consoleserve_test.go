package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/setpay/setpay/merchant/console"
)

const consolePassword = "operator pass phrase 1"

// addConsoleUser runs `setpay merchant console-user` with the password in the
// environment.
func addConsoleUser(t *testing.T, dir, usersFile, name string) result {
	t.Helper()
	return runSetpay(t, dir, []string{"SETPAY_CONSOLE_PASSWORD=" + consolePassword}, "merchant", "console-user",
		"--user", name, "--users-file", usersFile)
}

// startMerchantWithConsole restarts the bed's merchant with a console block (on the
// merchant's own TLS certificate and token key) and returns the console's address,
// read from its `console on https://ADDR/` line.
func (b *merchantBed) startMerchantWithConsole(usersFile string) string {
	t := b.t
	t.Helper()
	b.stopMerchant()
	mc := readConfig[merchantConfig](t, b.merchantCfg)
	cc := &consoleConfig{Listen: "127.0.0.1:0", UsersFile: usersFile}
	cc.TLS.Cert, cc.TLS.Key = mc.TLS.Cert, mc.TLS.Key
	mc.Console = cc
	writeConfig(t, b.merchantCfg, mc)

	b.merchant = setpayCmd(context.Background(), t, b.dir, b.env, "merchant", "serve", "--config", b.merchantCfg)
	b.merchant.Stderr = b.merchantLog
	return startConsoleServer(t, b.merchant, time.Minute)
}

// startConsoleServer starts cmd and waits for its console line, then for its
// listening line (printed after it).
func startConsoleServer(t *testing.T, cmd *exec.Cmd, d time.Duration) string {
	t.Helper()
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stdout = pw
	err = cmd.Start()
	_ = pw.Close()
	if err != nil {
		_ = pr.Close()
		require.NoError(t, err)
	}
	addrc := make(chan string, 1)
	go func() {
		defer pr.Close()
		defer close(addrc)
		sc := bufio.NewScanner(pr)
		console := ""
		for sc.Scan() { // to EOF, so the server never blocks writing stdout
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, "console on https://"); ok {
				console = strings.TrimSuffix(strings.TrimSpace(a), "/")
			}
			if strings.Contains(line, " listening on ") && console != "" {
				addrc <- console
			}
		}
	}()
	select {
	case a, ok := <-addrc:
		require.True(t, ok, "%s exited without its console and listening lines", cmd.Path)
		return a
	case <-time.After(d):
		require.FailNow(t, "server did not listen")
		return ""
	}
}

var consoleCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// consoleClient is an HTTPS client of the console trusting the demo's TLS CA, with
// cookies, not following redirects.
type consoleClient struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func newConsoleClient(t *testing.T, root, addr string) *consoleClient {
	t.Helper()
	p, err := pool(filepath.Join(root, "pki", "tls-ca.pem"))
	require.NoError(t, err)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &consoleClient{t: t, base: "https://" + addr, c: &http.Client{Jar: jar, Timeout: 2 * time.Minute,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *consoleClient) do(method, path string, form url.Values) (int, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		form.Set("csrf", c.csrf)
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	require.NoError(c.t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.c.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	if m := consoleCSRF.FindSubmatch(b); m != nil {
		c.csrf = string(m[1])
	}
	return resp.StatusCode, string(b)
}

// TestMerchantServeConsole (issue 14, merchant console): `merchant serve` with a
// console block serves the console over HTTPS with the TLS key in the merchant's
// token; an operator added with `setpay merchant console-user` logs in, sees the
// order a wallet bought and captures it there; the CLI then lists the order captured
// (one store, one code path); a wrong password is refused.
func TestMerchantServeConsole(t *testing.T) {
	b := newMerchantBed(t)
	xid := b.buy("book")
	users := filepath.Join(b.dir, "console-users")
	r := addConsoleUser(t, b.dir, users, "ops")
	require.Zero(t, r.code, "%s", r)
	addr := b.startMerchantWithConsole(users)

	c := newConsoleClient(t, b.root, addr)
	code, body := c.do(http.MethodGet, "/", nil)
	assert.Equal(t, http.StatusSeeOther, code, "login first")
	code, _ = c.do(http.MethodGet, "/login", nil)
	require.Equal(t, http.StatusOK, code)
	code, body = c.do(http.MethodPost, "/login", url.Values{"name": {"ops"}, "password": {"not the password"}})
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Contains(t, body, "Wrong name or password.")
	code, body = c.do(http.MethodPost, "/login", url.Values{"name": {"ops"}, "password": {consolePassword}})
	require.Equal(t, http.StatusSeeOther, code, "%s", body)

	code, body = c.do(http.MethodGet, "/", nil)
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, xid)
	assert.Contains(t, body, "49.90 EUR")
	assert.Contains(t, body, "Signed in as ops")

	code, body = c.do(http.MethodPost, "/orders/"+xid+"/capture", url.Values{})
	require.Equal(t, http.StatusOK, code, "%s", body)
	assert.Contains(t, body, `<dd class="status">captured</dd>`)

	var orders []orderJSON
	b.op(&orders, "orders")
	assert.Equal(t, "captured", findOrder(t, orders, xid).State)
	var again opJSON
	b.op(&again, "capture", "--xid", xid)
	require.NotNil(t, again.Transaction)
	assert.Equal(t, int64(49_90), again.Transaction.CapturedTotal, "the CLI's capture is the console's request, answered again")
	var inq opJSON
	b.op(&inq, "inquiry", "--xid", xid)
	require.NotNil(t, inq.Transaction)
	assert.Len(t, itemsOf(inq.Transaction.Items, "capture"), 1, "one capture at the gateway")
}

// TestMerchantServeConsoleConfigErrors: a console block that cannot work stops
// `merchant serve` (exit 1, nothing listening) with the field named.
func TestMerchantServeConsoleConfigErrors(t *testing.T) {
	root := demoFixture(t)
	env := []string{"SOFTHSM2_CONF=" + filepath.Join(root, "softhsm", "softhsm2.conf")}
	base := readConfig[merchantConfig](t, filepath.Join(root, "merchant.yaml"))
	dir := t.TempDir()
	good := filepath.Join(dir, "users")
	require.Zero(t, addConsoleUser(t, dir, good, "ops").code)
	open := filepath.Join(dir, "users-open")
	data, err := os.ReadFile(good)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(open, data, 0o644))
	for name, tc := range map[string]struct {
		edit func(c *consoleConfig)
		want []string
	}{
		"no listen":        {func(c *consoleConfig) { c.Listen = "" }, []string{"console.listen: required"}},
		"bad listen":       {func(c *consoleConfig) { c.Listen = "8444" }, []string{"console.listen: want host:port"}},
		"no credential":    {func(c *consoleConfig) { c.UsersFile = "" }, []string{"console.users_file: required unless console.client_ca is set"}},
		"key not a URI":    {func(c *consoleConfig) { c.TLS.Key = "console-tls" }, []string{"console.tls.key: want a pkcs11: URI"}},
		"no cert":          {func(c *consoleConfig) { c.TLS.Cert = "" }, []string{"console.tls.cert: required"}},
		"users readable":   {func(c *consoleConfig) { c.UsersFile = open }, []string{"console.users_file: ", "chmod 600"}},
		"users missing":    {func(c *consoleConfig) { c.UsersFile = filepath.Join(dir, "nope") }, []string{"console.users_file: ", "nope"}},
		"client_ca absent": {func(c *consoleConfig) { c.ClientCA = filepath.Join(dir, "no-ca.pem") }, []string{"console.client_ca: "}},
		"key not in token": {func(c *consoleConfig) { c.TLS.Key = "pkcs11:token=setpay-merchant;object=no-such-key" }, []string{"console.tls.key: "}},
	} {
		t.Run(name, func(t *testing.T) {
			c := base
			c.Listen, c.MetricsListen = "127.0.0.1:0", ""
			cc := &consoleConfig{Listen: "127.0.0.1:0", UsersFile: good}
			cc.TLS.Cert, cc.TLS.Key = base.TLS.Cert, base.TLS.Key
			tc.edit(cc)
			c.Console = cc
			cfg := filepath.Join(t.TempDir(), "merchant.yaml")
			writeConfig(t, cfg, c)
			r := runSetpay(t, dir, env, "merchant", "serve", "--config", cfg)
			assert.Equal(t, 1, r.code, "%s", r)
			assert.NotContains(t, r.stdout, "listening on")
			assert.NotContains(t, r.stdout, "console on")
			assert.NotContains(t, r.stderr, "panic:")
			for _, w := range tc.want {
				assert.Contains(t, r.stderr, w)
			}
			assert.NotContains(t, r.stderr, "$2a$", "no hash in an error")
		})
	}
}

// TestMerchantConsoleUser: console-user writes the users file 0600 with a bcrypt hash
// of the password, adds a second user keeping the first, sets a new password for a
// known one, and refuses a file others may read, a short password, a missing
// password and missing flags.
func TestMerchantConsoleUser(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "console-users")
	r := addConsoleUser(t, dir, users, "ops")
	require.Zero(t, r.code, "%s", r)
	assert.Contains(t, r.stdout, "console user ops: added to "+users)
	st, err := os.Stat(users)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	pwFile := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pwFile, []byte("second operator password\n"), 0o600))
	r = runSetpay(t, dir, nil, "merchant", "console-user", "--user", "ops-2", "--users-file", users, "--password-file", pwFile)
	require.Zero(t, r.code, "%s", r)
	u, err := console.LoadUsers(users)
	require.NoError(t, err)
	require.Len(t, u, 2)
	assert.NoError(t, bcrypt.CompareHashAndPassword(u["ops"], []byte(consolePassword)))
	assert.NoError(t, bcrypt.CompareHashAndPassword(u["ops-2"], []byte("second operator password")))
	raw, err := os.ReadFile(users)
	require.NoError(t, err)
	assert.NotContains(t, string(raw), consolePassword)

	r = runSetpay(t, dir, nil, "merchant", "console-user", "--user", "ops", "--users-file", users, "--password-file", pwFile)
	require.Zero(t, r.code, "%s", r)
	assert.Contains(t, r.stdout, "password changed")
	u, err = console.LoadUsers(users)
	require.NoError(t, err)
	assert.NoError(t, bcrypt.CompareHashAndPassword(u["ops"], []byte("second operator password")))

	require.NoError(t, os.Chmod(users, 0o644))
	r = addConsoleUser(t, dir, users, "ops-3")
	assert.Equal(t, 1, r.code, "%s", r)
	assert.Contains(t, r.stderr, "chmod 600")
	require.NoError(t, os.Chmod(users, 0o600))

	for _, tc := range []struct {
		args []string
		env  []string
		code int
		want string
	}{
		{[]string{"--users-file", users}, nil, 2, "--user is required"},
		{[]string{"--user", "ops"}, nil, 2, "--users-file is required"},
		{[]string{"--user", "a b", "--users-file", users}, nil, 2, "--user: want 1..64 characters"},
		{[]string{"--user", "ops-4", "--users-file", users}, nil, 1, "$SETPAY_CONSOLE_PASSWORD"},
		{[]string{"--user", "ops-4", "--users-file", users}, []string{"SETPAY_CONSOLE_PASSWORD=short"}, 1, "console password: want at least 12 characters"},
	} {
		r := runSetpay(t, dir, tc.env, append([]string{"merchant", "console-user"}, tc.args...)...)
		assert.Equal(t, tc.code, r.code, "%v: %s", tc.args, r)
		assert.Contains(t, r.stderr, tc.want, "%v", tc.args)
		assert.NotContains(t, r.stderr, "short", "the password is not echoed")
	}
	u, err = console.LoadUsers(users)
	require.NoError(t, err)
	assert.Len(t, u, 2, "nothing half-written")
}
