package tlsrpc

import (
	"crypto/tls"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

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
// reflection only if l.Reflection. The rate
// limiter is the outermost interceptor, so a refused call costs no handler work.
func NewGRPCServerWithLimits(tlsCfg *tls.Config, l ServerLimits, opts ...grpc.ServerOption) (*grpc.Server, *health.Server, error) {
	// A negative rate would otherwise read as "no limit": refuse the mistake instead.
	if err := l.Rate.Validate(); err != nil {
		return nil, nil, fmt.Errorf("tlsrpc: gRPC server limits: %w", err)
	}
	if l.MaxRecvMsgBytes <= 0 {
		l.MaxRecvMsgBytes = DefaultMaxRecvMsgBytes
	}
	base := []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.MaxRecvMsgSize(l.MaxRecvMsgBytes),
	}
	if l.MaxConcurrentStreams > 0 {
		base = append(base, grpc.MaxConcurrentStreams(l.MaxConcurrentStreams))
	}
	if l.Rate.Rate > 0 {
		if l.Rate.Exempt == nil {
			l.Rate.Exempt = rpclimit.HealthExempt
		}
		lim, err := rpclimit.New(l.Rate)
		if err != nil {
			return nil, nil, fmt.Errorf("tlsrpc: gRPC server limits: %w", err)
		}
		base = append(base, lim.ServerOptions()...)
	}
	s := grpc.NewServer(append(base, opts...)...)
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	if l.Reflection {
		reflection.Register(s)
	}
	return s, h, nil
}
