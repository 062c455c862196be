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
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
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

	readyMu sync.Mutex
	ready   func() error
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
	descReattaches = prometheus.NewDesc("setpay_token_reattaches_total", "Times the token was found again after it had gone (module re-initialised if need be).", []string{"token"}, nil)
	descUsable     = prometheus.NewDesc("setpay_token_usable", "1 while the token is usable, 0 while it is gone and being looked for.", []string{"token"}, nil)
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
	ch <- descReattaches
	ch <- descUsable
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
		ch <- prometheus.MustNewConstMetric(descReattaches, prometheus.CounterValue, float64(st.Reattaches.Load()), t.Label())
		usable := 1.0
		if t.Health() != nil {
			usable = 0
		}
		ch <- prometheus.MustNewConstMetric(descUsable, prometheus.GaugeValue, usable, t.Label())
	}
}

// SetReadiness sets what /readyz asks: nil means ready (200), an error not ready (503,
// with the error's text as the one-line reason). Without it /readyz answers 200.
func (r *Registry) SetReadiness(ready func() error) {
	r.readyMu.Lock()
	defer r.readyMu.Unlock()
	r.ready = ready
}

func (r *Registry) readiness() error {
	r.readyMu.Lock()
	ready := r.ready
	r.readyMu.Unlock()
	if ready == nil {
		return nil
	}
	return ready()
}

// Serve exposes /metrics on addr until ctx ends, with /healthz (200 while the process
// runs) and /readyz (200 when ready, 503 and a one-line reason otherwise; see
// SetReadiness); it returns the bound address.
func (r *Registry) Serve(ctx context.Context, addr string, logger *slog.Logger) (string, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := r.readiness(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "not ready: "+strings.ReplaceAll(err.Error(), "\n", " ")+"\n")
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
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
