package tlsrpc

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/internal/rpclimit"
)

// DefaultMaxRecvMsgBytes bounds a received message when ServerLimits leaves it zero.
const DefaultMaxRecvMsgBytes = 1 << 20

// ServerLimits bound what clients may ask of a gRPC server.
type ServerLimits struct {
	// MaxRecvMsgBytes is the largest message the server reads; larger ones are
	// refused by gRPC with codes.ResourceExhausted before any handler runs.
	// Zero means DefaultMaxRecvMsgBytes.
	MaxRecvMsgBytes int
	// MaxConcurrentStreams bounds concurrent calls per connection; zero leaves
	// gRPC's default.
	MaxConcurrentStreams uint32
	// Rate limits requests per client (verified client certificate, else peer
	// host) with codes.ResourceExhausted; a zero Rate.Rate disables it. Health
	// checks are exempt unless Rate.Exempt says otherwise.
	Rate rpclimit.Config
	// Logger receives the one line each recovered handler panic writes; nil means
	// slog.Default().
	Logger *slog.Logger
	// Reflection registers gRPC server reflection (service discovery for tools
	// such as grpcurl). Off unless configured: a public port, the merchant's to
	// wallets above all, should not describe itself to anyone who asks.
	Reflection bool
}

// NewGRPCServer returns a gRPC server on TLS with health checking and server reflection
// registered, and with the message size bounded (signing requests are small, so a large
// message is an attack, not a request).
func NewGRPCServer(tlsCfg *tls.Config, maxMsgBytes int, opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	// Without a rate, NewGRPCServerWithLimits cannot fail.
	s, h, _ := NewGRPCServerWithLimits(tlsCfg, ServerLimits{MaxRecvMsgBytes: maxMsgBytes, Reflection: true}, opts...)
	return s, h
}

// NewGRPCServerWithLimits is NewGRPCServer with every limit configurable, and
// reflection only if l.Reflection.
//
// Interceptors run in this order, outermost first:
//
//  1. panic recovery, for panics in the interceptors below;
//  2. the interceptors chained by opts (the metrics of metrics.Registry), so that
//     they see every call, refusals included;
//  3. the rate limiter: a refused call costs no handler work;
//  4. panic recovery again, so a handler's panic reaches the interceptors above as
//     codes.Internal (counted like any other failure) and the server keeps serving.
//
// An interceptor set with grpc.UnaryInterceptor or grpc.StreamInterceptor in opts
// runs before all of these (gRPC puts it first).
func NewGRPCServerWithLimits(tlsCfg *tls.Config, l ServerLimits, opts ...grpc.ServerOption) (*grpc.Server, *health.Server, error) {
	// A negative rate would otherwise read as "no limit": refuse the mistake instead.
	if err := l.Rate.Validate(); err != nil {
		return nil, nil, fmt.Errorf("tlsrpc: gRPC server limits: %w", err)
	}
	if l.MaxRecvMsgBytes <= 0 {
		l.MaxRecvMsgBytes = DefaultMaxRecvMsgBytes
	}
	rec := recoveryOptions(l.Logger)
	sopts := []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.MaxRecvMsgSize(l.MaxRecvMsgBytes),
	}
	if l.MaxConcurrentStreams > 0 {
		sopts = append(sopts, grpc.MaxConcurrentStreams(l.MaxConcurrentStreams))
	}
	sopts = append(sopts, rec...)
	sopts = append(sopts, opts...)
	if l.Rate.Rate > 0 {
		if l.Rate.Exempt == nil {
			l.Rate.Exempt = rpclimit.HealthExempt
		}
		lim, err := rpclimit.New(l.Rate)
		if err != nil {
			return nil, nil, fmt.Errorf("tlsrpc: gRPC server limits: %w", err)
		}
		sopts = append(sopts, lim.ServerOptions()...)
	}
	sopts = append(sopts, rec...)
	s := grpc.NewServer(sopts...)
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	if l.Reflection {
		reflection.Register(s)
	}
	return s, h, nil
}

// recoveryOptions chain go-grpc-middleware's recovery interceptors with a handler that
// logs one line and answers codes.Internal.
func recoveryOptions(logger *slog.Logger) []grpc.ServerOption {
	if logger == nil {
		logger = slog.Default()
	}
	ro := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		logger.ErrorContext(ctx, "gRPC handler panicked", "method", method, "panic", describePanic(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(ro)),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(ro)),
	}
}

// describePanic names a panic without its value unless the runtime wrote it: a value
// a handler panics with may hold request data (a PAN, say), which a log must not.
func describePanic(p any) string {
	if re, ok := p.(runtime.Error); ok {
		return re.Error()
	}
	return fmt.Sprintf("%T", p)
}
