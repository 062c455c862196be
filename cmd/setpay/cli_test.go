package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/internal/testenv"
)

// cli runs the real setpay binary in dir, as a user would, and requires success.
type cli struct {
	t   *testing.T
	dir string
}

func (c cli) run(args ...string) string {
	c.t.Helper()
	r := runSetpay(c.t, c.dir, nil, args...)
	require.Zero(c.t, r.code, "setpay %s\n%s", strings.Join(args, " "), r)
	return r.stdout
}

// startServer starts cmd, a server told to listen on port 0, and returns the address
// it reports ("... listening on ADDR" on stdout): the port is the server's own, so no
// other process can take it between a probe and the server's listen. It fails t if
// the server exits or says nothing within d.
func startServer(t *testing.T, cmd *exec.Cmd, d time.Duration) string {
	t.Helper()
	addr, _ := startServerAddrs(t, cmd, d)
	return addr
}

// startServerAddrs is startServer for a service that may also serve metrics: it
// returns the gRPC address and, if the service announced one before it ("metrics on
// http://ADDR/metrics"), the metrics address. cmd's stdout is read by this function.
func startServerAddrs(t *testing.T, cmd *exec.Cmd, d time.Duration) (listen, metricsAddr string) {
	t.Helper()
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stdout = pw
	err = cmd.Start()
	_ = pw.Close() // the child holds its copy; EOF comes when it exits
	if err != nil {
		_ = pr.Close()
		require.NoError(t, err)
	}
	type addrs struct{ listen, metrics string }
	addrc := make(chan addrs, 1)
	go func() {
		defer pr.Close()
		defer close(addrc)
		sc := bufio.NewScanner(pr)
		var got addrs
		found := false
		for sc.Scan() { // read to EOF, so the server never blocks writing stdout
			line := sc.Text()
			if m, ok := strings.CutPrefix(line, "metrics on http://"); ok {
				got.metrics = strings.TrimSuffix(strings.TrimSpace(m), "/metrics")
			}
			if _, addr, ok := strings.Cut(line, " listening on "); ok && !found {
				found = true
				got.listen = strings.TrimSpace(addr)
				addrc <- got
			}
		}
	}()
	select {
	case a, ok := <-addrc:
		require.True(t, ok, "%s exited without listening", cmd.Path)
		return a.listen, a.metrics
	case <-time.After(d):
		require.FailNowf(t, "server did not listen", "%s said nothing in %v", cmd.Path, d)
		return "", ""
	}
}

// TestRegistrationSequenceFromTheDocs runs docs/pki.md's "From nothing to registered
// parties" with the built binary, each command its own process, then checks what it
// produced with OpenSSL and the token listing.
func TestRegistrationSequenceFromTheDocs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a whole CA; skipped with -short")
	}
	dir := t.TempDir()
	c := cli{t: t, dir: dir}

	c.run("hsm", "init-softhsm", "--softhsm-dir", "./var/softhsm", "--tokens", "setpay-root,setpay-ca,setpay-gateway,setpay-merchant,setpay-wallet")
	c.run("ca", "init", "--softhsm-dir", "./var/softhsm", "--root-token", "setpay-root", "--token", "setpay-ca", "--ca-dir", "./var/ca", "--store", "sqlite:./var/setpay.db")

	ctx, cancel := context.WithCancel(context.Background())
	serve := setpayCmd(ctx, t, dir, nil, "ca", "serve", "--softhsm-dir", "./var/softhsm", "--listen", "127.0.0.1:0")
	var serveErr bytes.Buffer
	serve.Stderr = &serveErr
	t.Cleanup(func() {
		cancel()
		_ = serve.Wait()
		if t.Failed() {
			t.Logf("ca serve stderr:\n%s", serveErr.String())
		}
	})
	addr := startServer(t, serve, 30*time.Second)

	for _, p := range []struct{ role, id, token string }{{"gateway", "gw-1", "setpay-gateway"}, {"merchant", "shop-1", "setpay-merchant"}} {
		secret := c.run("ca", "enroll", "--softhsm-dir", "./var/softhsm", "--role", p.role, "--id", p.id)
		require.NotEmpty(t, strings.TrimSpace(secret))
		require.NoError(t, os.WriteFile(filepath.Join(dir, p.id+".secret"), []byte(secret), 0o600))
		c.run(p.role, "register", "--ca", addr, "--id", p.id, "--secret-file", p.id+".secret",
			"--softhsm-dir", "./var/softhsm", "--token", p.token, "--dir", "./var/"+p.role)
		// A spent secret is spent.
		again := runSetpay(t, dir, nil, p.role, "register", "--ca", addr, "--id", p.id, "--secret-file", p.id+".secret",
			"--softhsm-dir", "./var/softhsm", "--token", p.token, "--dir", "./var/"+p.role+"-again")
		assert.Equal(t, 1, again.code, "re-used enrollment secret accepted:\n%s", again)
	}

	require.NoError(t, os.WriteFile(filepath.Join(dir, "card.yaml"), []byte("pan: \"4111111111111111\"\nexpiry: \"203012\"\npostal_code: \"75001\"\ncardholder_name: \"Alice Example\"\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "wallet.pass"), []byte("correct horse battery staple\n"), 0o600))
	c.run("wallet", "register", "--ca", addr, "--card-file", "card.yaml", "--passphrase-file", "wallet.pass", "--wallet", "./var/wallet")

	// What a user checks next: OpenSSL accepts the issued certificates against the
	// exported chain and CRLs, and the parties' keys sit in their tokens, sensitive.
	if testenv.Tool(t, "openssl") != "" {
		var crls []byte
		for _, f := range []string{"root.crl", "brand.crl", "cca.crl", "mca.crl", "pca.crl"} {
			b, err := os.ReadFile(filepath.Join(dir, "var/ca", f))
			require.NoError(t, err, f)
			crls = append(crls, b...)
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, "crls.pem"), crls, 0o600))
		for _, leaf := range []string{"var/merchant/signature.pem", "var/gateway/signature.pem"} {
			cmd := exec.Command("openssl", "verify", "-crl_check_all", "-CAfile", "var/ca/root.pem", "-untrusted", "var/ca/chain.pem", "-CRLfile", "crls.pem", leaf)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			assert.NoError(t, err, "%s", out)
			assert.Contains(t, string(out), ": OK")
		}
	}
	listing := c.run("hsm", "list", "--softhsm-dir", "./var/softhsm", "--token", "setpay-gateway")
	privs := 0
	for _, line := range strings.Split(listing, "\n") {
		if !strings.HasPrefix(line, "private") {
			continue
		}
		privs++
		assert.Contains(t, line, "sensitive", line)
		assert.Contains(t, line, "never_extractable", line)
		assert.NotContains(t, line, ",extractable", line)
	}
	assert.GreaterOrEqual(t, privs, 2, "gateway signature and key-exchange keys:\n%s", listing)
}
