package signer

import (
	"crypto/tls"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// NewGRPCServer returns a gRPC server on TLS with health checking and server reflection
// registered, and with the message size bounded (signing requests are small, so a large
// message is an attack, not a request).
func NewGRPCServer(tlsCfg *tls.Config, maxMsgBytes int, opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	if maxMsgBytes <= 0 {
		maxMsgBytes = 1 << 20
	}
	opts = append([]grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.MaxRecvMsgSize(maxMsgBytes),
	}, opts...)
	s := grpc.NewServer(opts...)
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	reflection.Register(s)
	return s, h
}
