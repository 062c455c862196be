package interop_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/gateway"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/clock"
	"github.com/setpay/setpay/internal/rpclimit"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/system/systemtest"
)

// gatewayRefusal is what a SET gateway's limiter should put in its refusals: the
// merchant reads GATEWAY_UNAVAILABLE, keeps the order pending and the wallet may retry
// the same request. (Without it the merchant sees INTERNAL and records a final
// refusal of the purchase.)
var gatewayRefusal = &setpb.ErrorDetail{Reason: setpb.Reason_GATEWAY_UNAVAILABLE, Message: "rate limit exceeded, retry later"}

// TestGatewayRateLimit runs the bed's gateway behind the per-client limiter, keyed by
// the merchant's verified TLS client certificate.
func TestGatewayRateLimit(t *testing.T) {
	clk := clock.NewManual(time.Now())
	lim, err := rpclimit.New(rpclimit.Config{Rate: 1, Burst: 2, Clock: clk.Now, Detail: gatewayRefusal})
	require.NoError(t, err)
	b := newBed(t, bedOptions{gw: lim.ServerOptions()})
	ctx := context.Background()

	b.buy(t, systemtest.Alice, "book")
	b.buy(t, systemtest.Alice, "book")
	assert.Equal(t, 1, lim.Clients(), "one merchant certificate, one bucket")

	// The third authorization within the same instant is over the burst.
	w, err := b.Wallet(systemtest.Frank)
	require.NoError(t, err)
	s, err := w.Start(ctx, "book")
	require.NoError(t, err)
	req, err := w.Prepare(s)
	require.NoError(t, err)
	before := b.snapshot(t)
	_, err = w.Send(ctx, s, req)
	requireRefused(t, err, setpb.Reason_GATEWAY_UNAVAILABLE)
	assert.Equal(t, before.gwRows, countRows(t, b.gwRO), "the gateway recorded nothing")

	// Another merchant client certificate has its own bucket.
	other := otherMerchantConn(t, b)
	_, err = setpb.NewGatewayClient(other).Authorize(ctx, &setpb.Enveloped{})
	requireRefused(t, err, setpb.Reason_MALFORMED) // reached the gateway: not limited
	assert.Equal(t, 2, lim.Clients())

	// Time passes: the wallet retries the same request and the purchase completes.
	clk.Add(time.Second)
	r, err := w.Send(ctx, s, req)
	require.NoError(t, err)
	assert.Equal(t, setpb.AuthResult_APPROVED, r.Result)
}

// otherMerchantConn is a second mutual-TLS client of the gateway, with its own
// certificate (key in the merchant's token).
func otherMerchantConn(t *testing.T, b *bed) *grpc.ClientConn {
	t.Helper()
	k, err := b.merTok.GenerateKey(context.Background(), hsm.KeySpec{Label: "tls-client-other", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	id, err := b.TLS.IssueClient(gateway.TLSClientName("shop-other"), k, time.Hour)
	require.NoError(t, err)
	conn, err := grpc.NewClient(b.GatewayAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(&id, b.TLS.Pool(), "127.0.0.1"))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestMerchantRateLimitByPeer: wallets have no client certificates, so the merchant's
// limiter keys them by peer host; two connections from one host share a bucket.
func TestMerchantRateLimitByPeer(t *testing.T) {
	clk := clock.NewManual(time.Now())
	lim, err := rpclimit.New(rpclimit.Config{Rate: 0.5, Burst: 3, Clock: clk.Now})
	require.NoError(t, err)
	b := newBed(t, bedOptions{mer: lim.ServerOptions()})
	ctx := context.Background()
	second, err := grpc.NewClient(b.MerchantAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(nil, b.TLS.Pool(), "127.0.0.1"))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = second.Close() })
	bad := &setpb.PInitReq{} // refused by the merchant (MALFORMED) while within the rate
	for _, conn := range []*grpc.ClientConn{b.MerchantConn, second, b.MerchantConn} {
		_, err := setpb.NewMerchantClient(conn).PurchaseInit(ctx, bad)
		requireRefused(t, err, setpb.Reason_MALFORMED)
	}
	before := b.snapshot(t)
	for _, conn := range []*grpc.ClientConn{b.MerchantConn, second} {
		_, err := setpb.NewMerchantClient(conn).PurchaseInit(ctx, bad)
		assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	}
	b.requireUnchanged(t, before)
	assert.Equal(t, 1, lim.Clients())
	clk.Add(2 * time.Second)
	_, err = setpb.NewMerchantClient(second).PurchaseInit(ctx, bad)
	requireRefused(t, err, setpb.Reason_MALFORMED)
}

// testServerLimits builds a gateway server with tlsrpc.NewGRPCServerWithLimits, as
// the serve commands would: a message over MaxRecvMsgBytes is refused by gRPC before
// the handler, and the rate limiter (health checks exempt) answers ResourceExhausted.
func testServerLimits(t *testing.T, b *bed) {
	ctx := context.Background()
	clk := clock.NewManual(time.Now())
	const maxMsg = 64 << 10
	gs, health, err := tlsrpc.NewGRPCServerWithLimits(tlsrpc.ServerTLS(b.GatewayTLS, b.TLS.Pool()), tlsrpc.ServerLimits{
		MaxRecvMsgBytes: maxMsg, MaxConcurrentStreams: 16,
		Rate: rpclimit.Config{Rate: 1, Burst: 2, Clock: clk.Now, Detail: gatewayRefusal},
	})
	require.NoError(t, err)
	b.Gateway.Register(gs)
	health.SetServingStatus("", 1)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
		tlsrpc.ClientTLS(&b.MerchantClientTLS, b.TLS.Pool(), "127.0.0.1"))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	gw := setpb.NewGatewayClient(conn)

	_, err = gw.Authorize(ctx, &setpb.Enveloped{Cms: make([]byte, maxMsg+1)})
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "over MaxRecvMsgBytes: %v", err)
	_, err = gw.Authorize(ctx, &setpb.Enveloped{Cms: make([]byte, maxMsg/2)})
	requireRefused(t, err, setpb.Reason_MALFORMED)
	_, err = gw.Authorize(ctx, &setpb.Enveloped{})
	requireRefused(t, err, setpb.Reason_MALFORMED)
	// The burst of 2 is spent (the oversized message never reached the limiter).
	_, err = gw.Authorize(ctx, &setpb.Enveloped{})
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	assert.Equal(t, setpb.Reason_GATEWAY_UNAVAILABLE, setproto.ReasonOf(err))

	_, _, err = tlsrpc.NewGRPCServerWithLimits(nil, tlsrpc.ServerLimits{Rate: rpclimit.Config{Rate: 1, Burst: -1}})
	assert.Error(t, err, "an invalid limit is refused")

	// Reflection is off unless configured: the server does not describe itself.
	clk.Add(time.Minute) // refill the bucket
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	// A server that refuses the stream at once may close it before the request is
	// sent (Send then reports io.EOF); the status comes with Recv either way.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		require.ErrorIs(t, err, io.EOF)
	}
	_, err = stream.Recv()
	assert.Equal(t, codes.Unimplemented, status.Code(err), "no reflection by default: %v", err)
}
