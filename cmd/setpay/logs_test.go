package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// copyStore copies a sqlite: store (with its WAL files, if any) into dir and returns
// the copy's DSN, so a test writes to its own store and not the shared demo's.
func copyStore(t *testing.T, dsn, dir string) string {
	t.Helper()
	src, ok := strings.CutPrefix(dsn, "sqlite:")
	require.True(t, ok, "a sqlite: store: %s", dsn)
	dst := filepath.Join(dir, filepath.Base(src))
	for _, suffix := range []string{"", "-wal", "-shm"} {
		in, err := os.Open(src + suffix)
		if os.IsNotExist(err) && suffix != "" {
			continue
		}
		require.NoError(t, err)
		out, err := os.Create(dst + suffix)
		require.NoError(t, err)
		_, err = io.Copy(out, in)
		require.NoError(t, err)
		require.NoError(t, out.Close())
		require.NoError(t, in.Close())
	}
	return "sqlite:" + dst
}

// TestServicesLogEachRequestAtInfoByDefault: with no log flag or variable, the gateway
// logs one INFO line per authorization with its result, the XID and the masked PAN, and
// the merchant one per purchase with its result and XID; no output of any process holds
// the full card number (issue 11, operator conventions).
func TestServicesLogEachRequestAtInfoByDefault(t *testing.T) {
	root := demoFixture(t)
	dir := t.TempDir()
	env := []string{"SOFTHSM2_CONF=" + filepath.Join(root, "softhsm", "softhsm2.conf"), "SETPAY_LOG_LEVEL", "SETPAY_LOG_FORMAT"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func(name string, cfg configFile, path string) (string, *lockedBuffer, func()) {
		t.Helper()
		writeConfig(t, path, cfg)
		cmd := setpayCmd(ctx, t, dir, env, name, "serve", "--config", path)
		stderr := &lockedBuffer{}
		cmd.Stderr = stderr
		addr := startServer(t, cmd, 30*time.Second)
		return addr, stderr, func() {
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			assert.NoError(t, cmd.Wait(), "%s serve\n%s", name, stderr.String())
		}
	}

	gw := readConfig[gatewayConfig](t, filepath.Join(root, "gateway.yaml"))
	gw.Listen, gw.MetricsListen, gw.Store = "127.0.0.1:0", "", copyStore(t, gw.Store, dir)
	gwAddr, gwLog, stopGW := start("gateway", &gw, filepath.Join(dir, "gateway.yaml"))
	mc := readConfig[merchantConfig](t, filepath.Join(root, "merchant.yaml"))
	mc.Listen, mc.MetricsListen, mc.Store, mc.Gateway.Address = "127.0.0.1:0", "", copyStore(t, mc.Store, dir), gwAddr
	merAddr, merLog, stopMer := start("merchant", &mc, filepath.Join(dir, "merchant.yaml"))

	pki := func(n string) string { return filepath.Join(root, "pki", n) }
	buy := runSetpay(t, dir, env, "wallet", "buy", "--softhsm-dir", filepath.Join(root, "softhsm"), "--token", "setpay-wallet",
		"--wallet", filepath.Join(root, "wallet-alice"), "--passphrase-file", filepath.Join(root, "wallet-alice.pass"),
		"--merchant", merAddr, "--merchant-ca", pki("tls-ca.pem"), "--crls", pki("crls.pem"), "--offer", "book")
	require.Zero(t, buy.code, "%s", buy)
	m := regexp.MustCompile(`^purchase (\S+) at \S+ with \S+: APPROVED`).FindStringSubmatch(buy.stdout)
	require.NotNil(t, m, "wallet buy: %s", buy.stdout)
	xid := m[1]
	stopMer()
	stopGW()

	assert.Regexp(t, `(?m)^time=\S+ level=INFO msg=authorization .*xid=`+regexp.QuoteMeta(xid)+` pan=\*{12}1111 .*result=APPROVED`, gwLog.String())
	assert.Regexp(t, `(?m)^time=\S+ level=INFO msg=purchase xid=`+regexp.QuoteMeta(xid)+` .*result=APPROVED`, merLog.String())
	const pan = "4111111111111111" // Alice's card in the demo
	for name, out := range map[string]string{"gateway": gwLog.String(), "merchant": merLog.String(), "wallet stdout": buy.stdout, "wallet stderr": buy.stderr} {
		assert.NotContains(t, out, pan, "%s holds the full PAN", name)
	}
}
