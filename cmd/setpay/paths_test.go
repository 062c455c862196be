package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCACommandsFromAnotherDirectoryUseTheCAsStore: ca.yaml's store path is relative
// to ca.yaml, so CA commands run elsewhere open the CA's store and create none; a
// misspelt store is an error.
func TestCACommandsFromAnotherDirectoryUseTheCAsStore(t *testing.T) {
	if testing.Short() {
		t.Skip("creates a CA; skipped with -short")
	}
	home := t.TempDir()
	c := cli{t: t, dir: home}
	c.run("hsm", "init-softhsm", "--softhsm-dir", "./var/softhsm", "--tokens", "setpay-root,setpay-ca")
	c.run("ca", "init", "--softhsm-dir", "./var/softhsm", "--ca-dir", "./var/ca", "--store", "sqlite:./var/setpay.db")
	caYAML, err := os.ReadFile(filepath.Join(home, "var", "ca", "ca.yaml"))
	require.NoError(t, err)
	assert.Contains(t, string(caYAML), "store: sqlite:../setpay.db", "recorded relative to ca.yaml")

	elsewhere := t.TempDir()
	hsmDir, caDir := filepath.Join(home, "var", "softhsm"), filepath.Join(home, "var", "ca")
	first := runSetpay(t, elsewhere, nil, "ca", "crl", "--softhsm-dir", hsmDir, "--ca-dir", caDir, "--issuer", "pca")
	require.Zero(t, first.code, "%s", first)
	assert.Contains(t, first.stdout, "BEGIN X509 CRL")
	secret := runSetpay(t, elsewhere, nil, "ca", "enroll", "--softhsm-dir", hsmDir, "--ca-dir", caDir, "--role", "merchant", "--id", "shop-9")
	require.Zero(t, secret.code, "%s", secret)
	assert.NoDirExists(t, filepath.Join(elsewhere, "var"), "no second store next to the caller")
	entries, err := os.ReadDir(elsewhere)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing created in the calling directory")

	typo := filepath.Join(home, "var", "setpay-typo.db")
	r := runSetpay(t, elsewhere, nil, "ca", "enroll", "--softhsm-dir", hsmDir, "--ca-dir", caDir, "--store", "sqlite:"+typo, "--role", "merchant", "--id", "shop-10")
	assert.Equal(t, 1, r.code, "%s", r)
	assert.Contains(t, r.stderr, "no such store")
	assert.NoFileExists(t, typo)

	r = runSetpay(t, elsewhere, nil, "ca", "approve", "--softhsm-dir", hsmDir, "--ca-dir", filepath.Join(home, "var", "ca-typo"))
	assert.Equal(t, 1, r.code, "%s", r)
	assert.Contains(t, r.stderr, "ca.yaml")
	assert.NoDirExists(t, filepath.Join(home, "var", "ca-typo"))
}

// TestStoreIsNeverCreatedByTheWay: audit verify and the services open an existing
// store only (a missing one is an error, and stays missing); store init creates one.
func TestStoreIsNeverCreatedByTheWay(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope", "gateway.db")
	r := runSetpay(t, dir, nil, "audit", "verify", "--store", "sqlite:"+missing)
	assert.Equal(t, 1, r.code, "%s", r)
	assert.Contains(t, r.stderr, "no such store")
	assert.NotContains(t, r.stdout, "verified")
	assert.NoDirExists(t, filepath.Join(dir, "nope"))

	empty := filepath.Join(dir, "empty.db")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	r = runSetpay(t, dir, nil, "audit", "verify", "--store", "sqlite:"+empty)
	assert.Equal(t, 1, r.code, "a file without the schema is no store\n%s", r)
	assert.Contains(t, r.stderr, "no such store")

	fresh := filepath.Join(dir, "fresh.db")
	r = runSetpay(t, dir, nil, "store", "init", "--store", "sqlite:"+fresh)
	require.Zero(t, r.code, "%s", r)
	assert.FileExists(t, fresh)
	r = runSetpay(t, dir, nil, "audit", "verify", "--store", "sqlite:"+fresh)
	require.Zero(t, r.code, "%s", r)
	assert.Contains(t, r.stdout, "verified: 0 records")
}

// TestServeConfigPathsAreRelativeToTheFile: a gateway.yaml with relative paths serves
// when started from another directory; with a misspelt store it fails and creates none.
func TestServeConfigPathsAreRelativeToTheFile(t *testing.T) {
	root := demoFixture(t)
	c := readConfig[gatewayConfig](t, filepath.Join(root, "gateway.yaml"))
	rel := func(p string) string {
		r, err := filepath.Rel(root, p)
		require.NoError(t, err)
		return r
	}
	c.PINSource = "file:" + rel(strings.TrimPrefix(c.PINSource, "file:"))
	c.LedgerFile = rel(c.LedgerFile)
	c.SignCert, c.KXCert, c.Root = rel(c.SignCert), rel(c.KXCert), rel(c.Root)
	c.CAChain, c.CRLs = []string{rel(c.CAChain[0])}, []string{rel(c.CRLs[0])}
	c.TLS.Cert, c.TLS.ClientCA = rel(c.TLS.Cert), rel(c.TLS.ClientCA)
	c.Store = "sqlite:" + rel(strings.TrimPrefix(c.Store, "sqlite:"))
	c.Listen, c.MetricsListen = "127.0.0.1:0", ""
	require.False(t, filepath.IsAbs(c.SignCert))
	cfg := filepath.Join(root, "gateway-relative.yaml")
	writeConfig(t, cfg, c)
	t.Cleanup(func() { _ = os.Remove(cfg) })
	env := []string{"SOFTHSM2_CONF=" + filepath.Join(root, "softhsm", "softhsm2.conf")}
	elsewhere := t.TempDir()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := setpayCmd(ctx, t, elsewhere, env, "gateway", "serve", "--config", cfg)
	var out strings.Builder
	cmd.Stderr = &out
	startServer(t, cmd, 30*time.Second)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, cmd.Wait(), "%s", out.String())

	c.Store = "sqlite:gatway.db"
	writeConfig(t, cfg, c)
	r := runSetpay(t, elsewhere, env, "gateway", "serve", "--config", cfg)
	assert.Equal(t, 1, r.code, "%s", r)
	assert.Contains(t, r.stderr, "store: ")
	assert.Contains(t, r.stderr, "no such store")
	assert.NoFileExists(t, filepath.Join(root, "gatway.db"))
	assert.NoFileExists(t, filepath.Join(elsewhere, "gatway.db"))
}

func TestConfigPathsResolveAgainstTheFile(t *testing.T) {
	var g gatewayConfig
	g.Module, g.PINSource, g.LedgerFile = "libsofthsm2.so", "file:pin", "issuer-ledger.yaml"
	g.SignCert, g.Root, g.CAChain, g.CRLs = "pki/sign.pem", "/etc/setpay/root.pem", []string{"chain.pem"}, []string{"../crls.pem"}
	g.Store, g.TLS.Cert = "sqlite:gw.db", "tls.pem"
	g.resolvePaths("/srv/gw")
	assert.Equal(t, "libsofthsm2.so", g.Module, "a bare library name is for the loader")
	assert.Equal(t, "file:/srv/gw/pin", g.PINSource)
	assert.Equal(t, "/srv/gw/issuer-ledger.yaml", g.LedgerFile)
	assert.Equal(t, "/srv/gw/pki/sign.pem", g.SignCert)
	assert.Equal(t, "/etc/setpay/root.pem", g.Root)
	assert.Equal(t, []string{"/srv/gw/chain.pem"}, g.CAChain)
	assert.Equal(t, []string{"/srv/crls.pem"}, g.CRLs)
	assert.Equal(t, "sqlite:/srv/gw/gw.db", g.Store)
	assert.Equal(t, "/srv/gw/tls.pem", g.TLS.Cert)
	assert.Equal(t, "postgres://db/setpay", dsnInDir("/x", "postgres://db/setpay"))
	assert.Equal(t, "lib/p11.so", moduleInDir("", "lib/p11.so"))
	assert.Equal(t, "/opt/lib/p11.so", moduleInDir("/opt", "lib/p11.so"))
}
