package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/setpay/setpay/hsm"
)

// healthInterval is how often a service probes its token and store. A token that went
// away is also noticed by the first operation that fails on it, at once.
const healthInterval = 2 * time.Second

// pinger is a store that can be asked, cheaply, whether it is reachable.
type pinger func(ctx context.Context) error

// healthWatcher keeps a service's readiness following its token and its store: the
// gRPC health status ("" service) is NOT_SERVING while either is unusable and SERVING
// again by itself once both are, and /readyz on the metrics port answers the same with
// a one-line reason. It probes every healthInterval and wakes at once when a token
// operation finds the token unusable (hsm.Token.HealthChanged).
type healthWatcher struct {
	tokens   []*hsm.Token
	ping     pinger // nil: no store
	logger   *slog.Logger
	interval time.Duration

	mu     sync.Mutex
	reason string         // "" while ready
	hs     *health.Server // nil until bound
	probed chan struct{}  // closed after the first probe
}

func newHealthWatcher(logger *slog.Logger, ping pinger, tokens ...*hsm.Token) *healthWatcher {
	return &healthWatcher{tokens: tokens, ping: ping, logger: logger, interval: healthInterval, reason: "starting", probed: make(chan struct{})}
}

// ready is /readyz's answer: nil when serving, else why not (one line, no key URI, no
// CKR code: those are in the log).
func (w *healthWatcher) ready() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.reason != "" {
		return errors.New(w.reason)
	}
	return nil
}

// bind makes the gRPC health server follow the watcher from now on.
func (w *healthWatcher) bind(hs *health.Server) {
	<-w.probed
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hs = hs
	hs.SetServingStatus("", servingStatus(w.reason))
}

func servingStatus(reason string) healthpb.HealthCheckResponse_ServingStatus {
	if reason == "" {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

// run probes until ctx ends.
func (w *healthWatcher) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	first := true
	for {
		changed := make([]<-chan struct{}, len(w.tokens))
		for i, tok := range w.tokens {
			changed[i] = tok.HealthChanged()
		}
		w.set(w.probe(ctx))
		if first {
			close(w.probed)
			first = false
		}
		wake := make(chan struct{})
		stop := make(chan struct{})
		for _, c := range changed {
			go func() {
				select {
				case <-c:
					select {
					case wake <- struct{}{}:
					case <-stop:
					}
				case <-stop:
				}
			}()
		}
		select {
		case <-ctx.Done():
			close(stop)
			return
		case <-t.C:
		case <-wake:
		}
		close(stop)
	}
}

// probe asks each token (which also tries to bring a gone token back, bounded by the
// module's backoff) and pings the store.
func (w *healthWatcher) probe(ctx context.Context) string {
	for _, tok := range w.tokens {
		if err := tok.Check(ctx); err != nil {
			if ctx.Err() != nil {
				return "stopping"
			}
			w.logger.Debug("token check failed", "token", tok.Label(), "err", err)
			return fmt.Sprintf("token %q unavailable", tok.Label())
		}
	}
	if w.ping != nil {
		pctx, cancel := context.WithTimeout(ctx, w.interval)
		defer cancel()
		if err := w.ping(pctx); err != nil {
			if ctx.Err() != nil {
				return "stopping"
			}
			w.logger.Warn("store unreachable", "err", err)
			return "store unreachable"
		}
	}
	return ""
}

func (w *healthWatcher) set(reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if reason == w.reason {
		return
	}
	switch {
	case reason == "":
		w.logger.Info("service ready: serving")
	case w.reason == "starting":
		w.logger.Warn("service not ready at start: not serving", "reason", reason)
	default:
		w.logger.Warn("service not ready: not serving", "reason", reason)
	}
	w.reason = reason
	if w.hs != nil {
		w.hs.SetServingStatus("", servingStatus(reason))
	}
}

// storePing is a cheap round trip to the store: it reads the schema version.
func storePing(db interface {
	SchemaVersion(context.Context) (int64, error)
}) pinger {
	return func(ctx context.Context) error {
		_, err := db.SchemaVersion(ctx)
		return err
	}
}
