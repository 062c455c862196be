package tlsrpc_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/clock"
	"github.com/setpay/setpay/internal/rpclimit"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/metrics"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

// pki is a TLS issuer with a server and a client identity, keys in a SoftHSM token.
type pki struct {
	issuer         *tlsrpc.TLSIssuer
	server, client tlsrpc.Identity
}

func newPKI(t *testing.T) pki {
	t.Helper()
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	gen := func(label string) *hsm.Key {
		k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: label, Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
		require.NoError(t, err)
		return k
	}
	issuer, err := tlsrpc.NewTLSIssuer("tlsrpc test CA", gen("tls-ca"), time.Hour)
	require.NoError(t, err)
	srv, err := issuer.Issue("127.0.0.1", gen("tls-srv"), time.Hour)
	require.NoError(t, err)
	cli, err := issuer.Issue("client", gen("tls-cli"), time.Hour)
	require.NoError(t, err)
	return pki{issuer: issuer, server: srv, client: cli}
}

// noLeaks fails t if goroutines it started outlive it; call it first, so that its
// check runs after every other cleanup (servers stopped, connections closed).
func noLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// serve starts gs on a loopback port and returns a client connection to it.
func serve(t *testing.T, p pki, gs *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(&p.client, p.issuer.Pool(), "127.0.0.1"))))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		gs.Stop()
		<-done
	})
	return conn
}

// panicService is a service whose methods panic; the panic value carries what a
// request might (a PAN), which the log line must not repeat.
const (
	panicValue   = "card 4111111111111111 broke the handler"
	panicService = "setpay.test.Panic"
)

var panicDesc = grpc.ServiceDesc{
	ServiceName: panicService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) { panic(panicValue) }
			if ic == nil {
				return h(ctx, in)
			}
			return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + panicService + "/Unary"}, h)
		},
	}, {
		MethodName: "Index",
		Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) {
				var s []int
				return s[len(in.String())+3], nil // a runtime panic: index out of range
			}
			return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + panicService + "/Index"}, h)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		Handler:       func(any, grpc.ServerStream) error { panic(panicValue) },
	}},
}

// TestRefusalsAreCounted: the metrics interceptors passed to NewGRPCServerWithLimits
// run outside the rate limiter, so a refused call is counted with its code. (With the
// limiter outermost, the refusal never reached the metrics and this test fails.)
func TestRefusalsAreCounted(t *testing.T) {
	noLeaks(t)
	p := newPKI(t)
	reg := metrics.New()
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	gs, _, err := tlsrpc.NewGRPCServerWithLimits(tlsrpc.ServerTLS(p.server, p.issuer.Pool()), tlsrpc.ServerLimits{
		Rate: rpclimit.Config{Rate: 1, Burst: 1, Clock: clk.Now, Exempt: func(string) bool { return false }},
	}, reg.GRPCServerOptions()...)
	require.NoError(t, err)
	hc := healthpb.NewHealthClient(serve(t, p, gs))
	ctx := context.Background()

	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "the burst")
	for range 2 {
		_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
		require.Equal(t, codes.ResourceExhausted, status.Code(err), "over the rate: %v", err)
	}

	const want = `
# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 1
grpc_server_handled_total{grpc_code="ResourceExhausted",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 2
`
	assert.NoError(t, testutil.GatherAndCompare(reg.Prometheus(), strings.NewReader(want), "grpc_server_handled_total"))
}

// TestHandlerPanicIsInternal: a panicking handler answers codes.Internal, writes one
// log line (without the panic's value unless the runtime wrote it), is counted, and
// the server keeps serving.
func TestHandlerPanicIsInternal(t *testing.T) {
	noLeaks(t)
	p := newPKI(t)
	reg := metrics.New()
	var logBuf syncBuffer
	logger := slog.New(slog.NewTextHandler(&logBuf, nil))
	gs, hs, err := tlsrpc.NewGRPCServerWithLimits(tlsrpc.ServerTLS(p.server, p.issuer.Pool()), tlsrpc.ServerLimits{Logger: logger},
		reg.GRPCServerOptions()...)
	require.NoError(t, err)
	gs.RegisterService(&panicDesc, struct{}{})
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	conn := serve(t, p, gs)
	ctx := context.Background()
	hc := healthpb.NewHealthClient(conn)

	tests := []struct {
		name, method string
		stream       bool
		logged       string // what the line names as the panic
	}{
		{"unary", "Unary", false, "panic=string"},
		{"runtime error", "Index", false, `panic="runtime error: index out of range [3] with length 0"`},
		{"stream", "Stream", true, "panic=string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logBuf.Reset()
			full := "/" + panicService + "/" + tt.method
			if tt.stream {
				cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, full)
				require.NoError(t, err)
				require.NoError(t, cs.SendMsg(&emptypb.Empty{}))
				require.NoError(t, cs.CloseSend())
				err = cs.RecvMsg(&emptypb.Empty{})
				assert.Equal(t, codes.Internal, status.Code(err), "%v", err)
			} else {
				err := conn.Invoke(ctx, full, &emptypb.Empty{}, &emptypb.Empty{})
				assert.Equal(t, codes.Internal, status.Code(err), "%v", err)
				assert.NotContains(t, err.Error(), "4111", "the client learns nothing of the panic")
			}
			lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
			require.Len(t, lines, 1, "one log line per panic:\n%s", logBuf.String())
			assert.Contains(t, lines[0], "gRPC handler panicked")
			assert.Contains(t, lines[0], "method="+full)
			assert.Contains(t, lines[0], tt.logged)
			assert.Contains(t, lines[0], "stack=", "the stack, for whoever reads the log")
			assert.NotContains(t, lines[0], "4111", "a panic value may hold request data")

			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			require.NoError(t, err, "the server still serves")
			assert.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())
		})
	}

	const want = `
# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="Internal",grpc_method="Index",grpc_service="setpay.test.Panic",grpc_type="unary"} 1
grpc_server_handled_total{grpc_code="Internal",grpc_method="Stream",grpc_service="setpay.test.Panic",grpc_type="server_stream"} 1
grpc_server_handled_total{grpc_code="Internal",grpc_method="Unary",grpc_service="setpay.test.Panic",grpc_type="unary"} 1
grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 3
`
	assert.NoError(t, testutil.GatherAndCompare(reg.Prometheus(), strings.NewReader(want), "grpc_server_handled_total"))
}

// syncBuffer is a bytes.Buffer the server's goroutines and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
func (s *syncBuffer) Reset()         { s.mu.Lock(); defer s.mu.Unlock(); s.b.Reset() }

// TestInterceptorPanicIsInternal: a panic in an interceptor the caller chains (outside
// the limiter and the handler's recovery) is recovered too.
func TestInterceptorPanicIsInternal(t *testing.T) {
	noLeaks(t)
	p := newPKI(t)
	var logBuf syncBuffer
	var calls atomic.Int32
	panicky := grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if calls.Add(1) == 1 {
			panic(panicValue)
		}
		return h(ctx, req)
	})
	gs, _, err := tlsrpc.NewGRPCServerWithLimits(tlsrpc.ServerTLS(p.server, p.issuer.Pool()),
		tlsrpc.ServerLimits{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))}, panicky)
	require.NoError(t, err)
	hc := healthpb.NewHealthClient(serve(t, p, gs))
	_, err = hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
	assert.Equal(t, codes.Internal, status.Code(err), "%v", err)
	lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
	require.Len(t, lines, 1, "one log line per panic:\n%s", logBuf.String())
	assert.Contains(t, lines[0], "method=/grpc.health.v1.Health/Check")
	assert.NotContains(t, lines[0], "4111")
	_, err = hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
	assert.NoError(t, err, "the server still serves")
}
