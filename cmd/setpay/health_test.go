package main

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
)

// healthBed is a copy of the demo's files in which the gateway and the merchant each
// have a SoftHSM token directory of their own (so moving one away touches no other
// party), with a running gateway and merchant, both serving metrics.
type healthBed struct {
	root                 string
	gwTokens, mTokens    string
	gwAddr, metricsAddr  string
	merchantAddr         string
	mMetricsAddr         string
	merchantConf, gwConf string
	softhsmConf          string // the wallet's and this test process's
	gwErr, mErr          *lockedBuffer
}

// copyDemo copies the demo's directory to dst, pointing its configurations at dst.
func copyDemo(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".conf") {
			b = []byte(strings.ReplaceAll(string(b), src, dst))
		}
		return os.WriteFile(to, b, 0o600)
	}))
}

func startHealthBed(t *testing.T, ctx context.Context) *healthBed {
	t.Helper()
	demo := demoFixture(t)
	root := t.TempDir()
	copyDemo(t, demo, root)
	b := &healthBed{root: root, softhsmConf: filepath.Join(root, "softhsm", "softhsm2.conf"), gwErr: &lockedBuffer{}}
	// The gateway's and the merchant's own copies of the token directory.
	copyDemo(t, filepath.Join(root, "softhsm"), filepath.Join(root, "softhsm-gw"))
	copyDemo(t, filepath.Join(root, "softhsm"), filepath.Join(root, "softhsm-m"))
	b.gwTokens = filepath.Join(root, "softhsm-gw", "tokens")
	b.mTokens = filepath.Join(root, "softhsm-m", "tokens")

	gc := readConfig[gatewayConfig](t, filepath.Join(root, "gateway.yaml"))
	gc.Listen, gc.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	b.gwConf = filepath.Join(root, "gateway-health.yaml")
	writeConfig(t, b.gwConf, gc)
	gw := setpayCmd(ctx, t, root, []string{"SOFTHSM2_CONF=" + filepath.Join(root, "softhsm-gw", "softhsm2.conf")}, "gateway", "serve", "--config", b.gwConf)
	gw.Stderr = b.gwErr
	b.gwAddr, b.metricsAddr = startServerAddrs(t, gw, 30*time.Second)
	require.NotEmpty(t, b.metricsAddr)
	t.Cleanup(func() {
		_ = gw.Process.Signal(syscall.SIGTERM)
		assert.NoError(t, gw.Wait(), "gateway\n%s", b.gwErr)
	})

	mc := readConfig[merchantConfig](t, filepath.Join(root, "merchant.yaml"))
	mc.Listen, mc.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	mc.Gateway.Address = b.gwAddr
	b.merchantConf = filepath.Join(root, "merchant-health.yaml")
	writeConfig(t, b.merchantConf, mc)
	m := setpayCmd(ctx, t, root, []string{"SOFTHSM2_CONF=" + filepath.Join(root, "softhsm-m", "softhsm2.conf")}, "merchant", "serve", "--config", b.merchantConf)
	b.mErr = &lockedBuffer{}
	m.Stderr = b.mErr
	b.merchantAddr, b.mMetricsAddr = startServerAddrs(t, m, 30*time.Second)
	require.NotEmpty(t, b.mMetricsAddr)
	t.Cleanup(func() {
		_ = m.Process.Signal(syscall.SIGTERM)
		assert.NoError(t, m.Wait(), "merchant\n%s", b.mErr)
	})
	return b
}

// buy runs `setpay wallet buy` with the demo's wallet against the bed's merchant.
func (b *healthBed) buy(t *testing.T) result {
	t.Helper()
	return runSetpay(t, b.root, nil, "wallet", "buy", "--softhsm-dir", filepath.Join(b.root, "softhsm"),
		"--token", "setpay-wallet", "--wallet", filepath.Join(b.root, "wallet-alice"),
		"--passphrase-file", filepath.Join(b.root, "wallet-alice.pass"), "--merchant", b.merchantAddr,
		"--merchant-ca", filepath.Join(b.root, "pki", "tls-ca.pem"), "--crls", filepath.Join(b.root, "pki", "crls.pem"),
		"--offer", "book")
}

// get fetches a metrics-port path: status code and body.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// gatewayHealth asks the gateway's gRPC health service, as a balancer would, with the
// merchant's TLS client certificate (its key in the merchant's token, opened here).
func (b *healthBed) gatewayHealth(t *testing.T, ctx context.Context) func() healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	t.Setenv("SOFTHSM2_CONF", b.softhsmConf) // read once, at this process's C_Initialize
	mc := readConfig[merchantConfig](t, b.merchantConf)
	mod, tok, err := openToken(ctx, &cliEnv{logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, mc.Module, mc.Token, hsm.PINSource(mc.PINSource), 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tok.Close(); _ = mod.Close() })
	r := &running{tok: tok}
	id, err := r.tlsIdentity(ctx, "gateway.tls_cert", mc.Gateway.ClientCert, "gateway.tls_key", mc.Gateway.ClientKey)
	require.NoError(t, err)
	roots, err := pool(mc.Gateway.TLSCA)
	require.NoError(t, err)
	conn, err := grpc.NewClient(b.gwAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(&id, roots, mc.Gateway.ServerName))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return healthOf(t, ctx, conn)
}

// merchantHealth asks the merchant's gRPC health service (wallets are anonymous at the
// TLS level).
func (b *healthBed) merchantHealth(t *testing.T, ctx context.Context) func() healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	roots, err := pool(filepath.Join(b.root, "pki", "tls-ca.pem"))
	require.NoError(t, err)
	conn, err := grpc.NewClient(b.merchantAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(nil, roots, "127.0.0.1"))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return healthOf(t, ctx, conn)
}

func healthOf(t *testing.T, ctx context.Context, conn *grpc.ClientConn) func() healthpb.HealthCheckResponse_ServingStatus {
	hc := healthpb.NewHealthClient(conn)
	return func() healthpb.HealthCheckResponse_ServingStatus {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		return res.GetStatus()
	}
}

// TestGatewayRecoversItsTokenDirectoryMovedAwayAndBack is issue 11 item 8 as an
// operator meets it: `gateway serve` runs, its SoftHSM token directory is moved away
// and back. While it is away the gateway reports NOT_SERVING (gRPC health) and 503
// on /readyz, and an authorization fails with a retryable UNAVAILABLE and the SET
// reason GATEWAY_UNAVAILABLE, naming no key and no CKR code; once it is back, the
// gateway serves again by itself, without a restart, and counts the recovery. The
// merchant's token, the same way, in TestMerchantRecoversItsTokenDirectoryMovedAwayAndBack.
func TestGatewayRecoversItsTokenDirectoryMovedAwayAndBack(t *testing.T) {
	testTokenMovedAwayAndBack(t, "gateway")
}

// TestMerchantRecoversItsTokenDirectoryMovedAwayAndBack: as for the gateway, with
// `merchant serve` and its token.
func TestMerchantRecoversItsTokenDirectoryMovedAwayAndBack(t *testing.T) {
	testTokenMovedAwayAndBack(t, "merchant")
}

func testTokenMovedAwayAndBack(t *testing.T, party string) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // after the services' own cleanups, which stop them with SIGTERM
	b := startHealthBed(t, ctx)
	tokens, metricsAddr, label, log := b.gwTokens, b.metricsAddr, "setpay-gateway", b.gwErr
	health := b.gatewayHealth(t, ctx)
	if party == "merchant" {
		tokens, metricsAddr, label, log = b.mTokens, b.mMetricsAddr, "setpay-merchant", b.mErr
		health = b.merchantHealth(t, ctx)
	}

	code, body := get(t, metricsAddr, "/healthz")
	assert.Equal(t, http.StatusOK, code, body)
	code, body = get(t, metricsAddr, "/readyz")
	assert.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, health())
	res := b.buy(t)
	require.Zero(t, res.code, "%s", res)
	assert.Contains(t, res.stdout, "APPROVED")

	away := tokens + ".away"
	require.NoError(t, os.Rename(tokens, away))
	back := false
	t.Cleanup(func() {
		if !back {
			_ = os.Rename(away, tokens)
		}
	})
	// The watcher probes every few seconds: wait for it, with a deadline.
	require.Eventually(t, func() bool { c, _ := get(t, metricsAddr, "/readyz"); return c == http.StatusServiceUnavailable },
		time.Minute, 100*time.Millisecond, "/readyz never said 503 with the token away")
	code, body = get(t, metricsAddr, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, 1, strings.Count(strings.TrimSpace(body), "\n")+1, "one line: %q", body)
	assert.Contains(t, body, label)
	assert.NotContains(t, body, "CKR_")
	assert.NotContains(t, body, "pkcs11:")
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, health())
	code, _ = get(t, metricsAddr, "/healthz")
	assert.Equal(t, http.StatusOK, code, "the process is alive")

	res = b.buy(t)
	require.NotZero(t, res.code, "%s", res)
	out := res.stdout + res.stderr
	assert.Contains(t, out, "GATEWAY_UNAVAILABLE", "%s", res)
	assert.Contains(t, out, "code = Unavailable", "%s", res)
	assert.NotContains(t, out, "CKR_")
	assert.NotContains(t, out, "pkcs11:")
	assert.NotContains(t, out, "APPROVED")

	require.NoError(t, os.Rename(away, tokens))
	back = true
	require.Eventually(t, func() bool { c, _ := get(t, metricsAddr, "/readyz"); return c == http.StatusOK },
		time.Minute, 100*time.Millisecond, "/readyz never came back to 200 with the token back")
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, health())
	res = b.buy(t)
	require.Zero(t, res.code, "%s\n%s:\n%s", res, party, log)
	assert.Contains(t, res.stdout, "APPROVED")

	_, metrics := get(t, metricsAddr, "/metrics")
	assert.Regexp(t, regexp.MustCompile(`setpay_token_recoveries_total\{token="`+label+`"\} [1-9]`), metrics)
	assert.Regexp(t, regexp.MustCompile(`setpay_token_reattaches_total\{token="`+label+`"\} [1-9]`), metrics)
	assert.Contains(t, metrics, `setpay_token_usable{token="`+label+`"} 1`)
	// The CKR codes are in the service's log, for the operator.
	assert.Contains(t, log.String(), "CKR_")
}
