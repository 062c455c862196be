// Package metrics exposes what setpay's services do as Prometheus metrics on a separate
// HTTP port: per token and key, operations by mechanism with latency histograms and
// errors by CKR code; per token, sessions in use and idle, recoveries and logins; per
// RPC, the standard gRPC server metrics; and counters the roles add (authorizations by
// result).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/setpay/setpay/hsm"
)

// Registry holds one process's metrics. It is passed around, never global.
type Registry struct {
	reg     *prometheus.Registry
	ops     *prometheus.HistogramVec
	errs    *prometheus.CounterVec
	tokens  *tokenCollector
	grpcSrv *grpcprom.ServerMetrics
	authz   *prometheus.CounterVec
}

// New makes a registry with the Go runtime and process collectors.
func New() *Registry {
	r := &Registry{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "setpay_token_operation_seconds",
			Help:    "Private-key operations in a token, by token, key, operation and mechanism.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3},
		}, []string{"token", "key", "op", "mechanism"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "setpay_token_operation_errors_total",
			Help: "Failed token operations, by token, key, operation and CKR code (\"\" when the failure was not the token's).",
		}, []string{"token", "key", "op", "ckr"}),
		tokens: &tokenCollector{},
		grpcSrv: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1}))),
		authz: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "setpay_authorizations_total",
			Help: "Authorization decisions, by result (approved or the decline reason).",
		}, []string{"result"}),
	}
	r.reg.MustRegister(r.ops, r.errs, r.tokens, r.grpcSrv, r.authz,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Prometheus is the underlying registry, for roles that add their own metrics.
func (r *Registry) Prometheus() *prometheus.Registry { return r.reg }

// ObserveOp implements hsm.Observer.
func (r *Registry) ObserveOp(token, key, op, mechanism string, seconds float64, err error) {
	r.ops.WithLabelValues(token, key, op, mechanism).Observe(seconds)
	if err != nil {
		r.errs.WithLabelValues(token, key, op, hsm.CKRName(err)).Inc()
	}
}

// WatchToken adds a token's operations and session gauges to the registry.
func (r *Registry) WatchToken(t *hsm.Token) {
	t.AddObserver(r)
	r.tokens.add(t)
}

// Authorization counts one authorization decision.
func (r *Registry) Authorization(result string) { r.authz.WithLabelValues(result).Inc() }

// GRPCServerOptions are the interceptors that record per-RPC metrics; pass them to
// grpc.NewServer (or tlsrpc.NewGRPCServer) and call InitGRPCServer after registering
// services.
func (r *Registry) GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(r.grpcSrv.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(r.grpcSrv.StreamServerInterceptor()),
	}
}

// InitGRPCServer pre-creates the per-method series so they read 0 before first use.
func (r *Registry) InitGRPCServer(s *grpc.Server) { r.grpcSrv.InitializeMetrics(s) }

// tokenCollector reads session and recovery counters from the tokens at scrape time.
type tokenCollector struct {
	mu     sync.Mutex
	tokens []*hsm.Token
}

var (
	descSessions   = prometheus.NewDesc("setpay_token_sessions", "PKCS#11 sessions, by state (in_use or idle).", []string{"token", "state"}, nil)
	descRecoveries = prometheus.NewDesc("setpay_token_recoveries_total", "Times sessions were reopened after a lost session, login or token.", []string{"token"}, nil)
	descLogins     = prometheus.NewDesc("setpay_token_logins_total", "Successful C_Login calls (first login and re-logins).", []string{"token"}, nil)
)

func (c *tokenCollector) add(t *hsm.Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tokens = append(c.tokens, t)
}

func (c *tokenCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSessions
	ch <- descRecoveries
	ch <- descLogins
}

func (c *tokenCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	tokens := append([]*hsm.Token(nil), c.tokens...)
	c.mu.Unlock()
	for _, t := range tokens {
		st := t.Stats()
		idle := float64(t.SessionsIdle())
		open := float64(st.SessionsOpen.Load())
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, max(open-idle, 0), t.Label(), "in_use")
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, idle, t.Label(), "idle")
		ch <- prometheus.MustNewConstMetric(descRecoveries, prometheus.CounterValue, float64(st.Recoveries.Load()), t.Label())
		ch <- prometheus.MustNewConstMetric(descLogins, prometheus.CounterValue, float64(st.Logins.Load()), t.Label())
	}
}

// Serve exposes /metrics on addr until ctx ends; it returns the bound address.
func (r *Registry) Serve(ctx context.Context, addr string, logger *slog.Logger) (string, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) && logger != nil {
			logger.Error("metrics server stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return lis.Addr().String(), nil
}
