package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/setpay/setpay/internal/tlsrpc"
)

// TestCAServeHealthFollowsItsToken: `ca serve` is a service like the gateway: its gRPC
// health and /readyz follow its token, NOT_SERVING / 503 while the token directory is
// moved away and SERVING / 200 again by itself once it is back, without a restart.
func TestCAServeHealthFollowsItsToken(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ca init; skipped with -short")
	}
	dir := t.TempDir()
	c := cli{t: t, dir: dir}
	c.run("hsm", "init-softhsm", "--softhsm-dir", "./var/softhsm", "--tokens", "setpay-root,setpay-ca")
	c.run("ca", "init", "--softhsm-dir", "./var/softhsm", "--ca-dir", "./var/ca", "--store", "sqlite:./var/ca.db")

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := &lockedBuffer{}
	serve := setpayCmd(ctx, t, dir, nil, "ca", "serve", "--softhsm-dir", "./var/softhsm", "--ca-dir", "./var/ca",
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
	serve.Stderr = log
	addr, metricsAddr := startServerAddrs(t, serve, 30*time.Second)
	require.NotEmpty(t, metricsAddr, "ca serve announces its metrics address")
	t.Cleanup(func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		assert.NoError(t, serve.Wait(), "ca serve\n%s", log)
	})

	roots, err := pool(filepath.Join(dir, "var", "ca", "tls-ca.pem"))
	require.NoError(t, err)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(nil, roots, "127.0.0.1"))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	health := healthOf(t, ctx, conn)

	readyz := func() int { code, _ := get(t, metricsAddr, "/readyz"); return code }
	require.Eventually(t, func() bool { return readyz() == http.StatusOK }, 30*time.Second, 100*time.Millisecond, "/readyz at start\n%s", log)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, health())

	tokens := filepath.Join(dir, "var", "softhsm", "tokens")
	away := tokens + ".away"
	require.NoError(t, os.Rename(tokens, away))
	back := false
	t.Cleanup(func() {
		if !back {
			_ = os.Rename(away, tokens)
		}
	})
	require.Eventually(t, func() bool { return readyz() == http.StatusServiceUnavailable }, time.Minute, 100*time.Millisecond,
		"/readyz never said 503 with the CA's token away\n%s", log)
	code, body := get(t, metricsAddr, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "setpay-ca")
	assert.NotContains(t, body, "CKR_")
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, health())

	require.NoError(t, os.Rename(away, tokens))
	back = true
	require.Eventually(t, func() bool { return readyz() == http.StatusOK }, time.Minute, 100*time.Millisecond,
		"/readyz never came back to 200 with the CA's token back\n%s", log)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, health())
}
