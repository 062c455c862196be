package metrics_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/metrics"
	"github.com/setpay/setpay/signer"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// value reads one sample; the pattern is a regexp for the series, labels included.
func value(t *testing.T, text, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + series + ` ([0-9.e+-]+)$`).FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

func TestCountersMoveWithRealOperations(t *testing.T) {
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

	before := scrape(t, addr)
	assert.Zero(t, value(t, before, `grpc_server_handled_total\{grpc_code="OK",grpc_method="Sign",grpc_service="setpay.signer.v1.Signer",grpc_type="unary"\}`))

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

	after := scrape(t, addr)
	cases := []struct {
		series string
		want   float64
	}{
		{`setpay_token_operation_seconds_count\{key="gw-sign",mechanism="CKM_ECDSA",op="sign",token="` + tok.Label() + `"\}`, 5},
		{`setpay_token_operation_errors_total\{ckr="",key="gw-sign",op="decrypt",token="` + tok.Label() + `"\}`, 1},
		{`grpc_server_handled_total\{grpc_code="OK",grpc_method="Sign",grpc_service="setpay.signer.v1.Signer",grpc_type="unary"\}`, 5},
		{`setpay_authorizations_total\{result="approved"\}`, 1},
		{`setpay_authorizations_total\{result="insufficient_funds"\}`, 1},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, value(t, after, c.series), c.series)
	}
	// Several TLS signatures and generations happened too; at least the 5 remote signs.
	assert.GreaterOrEqual(t, value(t, after, `setpay_token_logins_total\{token="`+tok.Label()+`"\}`), 1.0)
	assert.GreaterOrEqual(t, value(t, after, `setpay_token_sessions\{state="idle",token="`+tok.Label()+`"\}`), 1.0)
	assert.Regexp(t, `setpay_token_recoveries_total\{token="`+tok.Label()+`"\} 0`, after)
}
