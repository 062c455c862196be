package metrics_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/metrics"
	"github.com/setpay/setpay/signer"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

// sample is the value of the one series of the family name whose labels are exactly
// labels (a histogram's sample count): a family or series that does not exist — a
// misspelt name or label — fails the test instead of reading 0.
func sample(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := g.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if !maps.Equal(got, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
			require.FailNow(t, "unsupported metric type", "%s %v", name, labels)
		}
		require.FailNow(t, "no such series", "%s %v", name, labels)
	}
	require.FailNow(t, "no such metric family", "%s", name)
	return 0
}

func TestCountersMoveWithRealOperations(t *testing.T) {
	// First, so it runs after every other cleanup: the gRPC server, the /metrics
	// server (stopped when ctx ends) and the client leave no goroutine behind.
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tok := softhsmtest.NewToken(t)
	reg := metrics.New()
	reg.WatchToken(tok)
	gen := func(label string, alg hsm.Algorithm, usage hsm.Usage) *hsm.Key {
		k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: label, Algorithm: alg, Usage: usage})
		require.NoError(t, err)
		return k
	}
	signKey := gen("gw-sign", hsm.ECDSAP256, hsm.UsageSign)
	svc := signer.NewService()
	require.NoError(t, svc.Add(signer.Entry{Name: "gw-sign", Key: signKey}))
	issuer, err := tlsrpc.NewTLSIssuer("metrics test CA", gen("tls-ca", hsm.ECDSAP256, hsm.UsageSign), time.Hour)
	require.NoError(t, err)
	srvID, err := issuer.Issue("127.0.0.1", gen("tls-srv", hsm.ECDSAP256, hsm.UsageSign), time.Hour)
	require.NoError(t, err)
	cliID, err := issuer.Issue("gateway", gen("tls-cli", hsm.ECDSAP256, hsm.UsageSign), time.Hour)
	require.NoError(t, err)
	gs, _ := tlsrpc.NewGRPCServer(tlsrpc.ServerTLS(srvID, issuer.Pool()), 0, reg.GRPCServerOptions()...)
	signer.NewServer(svc, signer.Grants{"gateway": {"gw-sign"}}, signer.Limits{}, nil).Register(gs)
	reg.InitGRPCServer(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	addr, err := reg.Serve(ctx, "127.0.0.1:0", nil)
	require.NoError(t, err)

	g := reg.Prometheus()
	signOK := map[string]string{"grpc_code": "OK", "grpc_method": "Sign", "grpc_service": "setpay.signer.v1.Signer", "grpc_type": "unary"}
	assert.Zero(t, sample(t, g, "grpc_server_handled_total", signOK), "InitGRPCServer pre-creates the series")

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(&cliID, issuer.Pool(), "127.0.0.1"))))
	require.NoError(t, err)
	defer conn.Close()
	client := signer.NewClient(conn, signer.ClientOptions{})
	remote, err := client.Key(ctx, "gw-sign")
	require.NoError(t, err)
	d := sha256.Sum256([]byte("m"))
	for range 5 {
		_, err := remote.Sign(rand.Reader, d[:], crypto.SHA256)
		require.NoError(t, err)
	}
	_, err = signKey.Decrypt(rand.Reader, make([]byte, 32), &rsa.OAEPOptions{Hash: crypto.SHA1})
	require.Error(t, err)
	reg.Authorization("approved")
	reg.Authorization("insufficient_funds")

	tl := tok.Label()
	cases := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"setpay_token_operation_seconds", map[string]string{"key": "gw-sign", "mechanism": "CKM_ECDSA", "op": "sign", "token": tl}, 5},
		{"setpay_token_operation_errors_total", map[string]string{"ckr": "", "key": "gw-sign", "op": "decrypt", "token": tl}, 1},
		{"grpc_server_handled_total", signOK, 5},
		{"setpay_token_recoveries_total", map[string]string{"token": tl}, 0},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, sample(t, g, c.name, c.labels), "%s %v", c.name, c.labels)
	}
	// Several TLS signatures and generations happened too; at least the 5 remote signs.
	assert.GreaterOrEqual(t, sample(t, g, "setpay_token_logins_total", map[string]string{"token": tl}), 1.0)
	assert.GreaterOrEqual(t, sample(t, g, "setpay_token_sessions", map[string]string{"state": "idle", "token": tl}), 1.0)

	// And /metrics serves them, in the exposition format.
	const authz = `
# HELP setpay_authorizations_total Authorization decisions, by result (approved or the decline reason).
# TYPE setpay_authorizations_total counter
setpay_authorizations_total{result="approved"} 1
setpay_authorizations_total{result="insufficient_funds"} 1
`
	assert.NoError(t, testutil.ScrapeAndCompare("http://"+addr+"/metrics", strings.NewReader(authz), "setpay_authorizations_total"))
	problems, err := testutil.GatherAndLint(g, "setpay_authorizations_total", "setpay_token_operation_seconds",
		"setpay_token_operation_errors_total", "setpay_token_sessions", "setpay_token_recoveries_total", "setpay_token_logins_total")
	require.NoError(t, err)
	assert.Empty(t, problems, "metric names and help follow the Prometheus conventions")
}
