// Package rpclimit bounds what one client may ask of a gRPC server: a token bucket
// (golang.org/x/time/rate) of requests per client, where a client is the identity of
// its verified TLS client certificate or, for servers that do not ask for one, its
// peer address (host only, so new connections do not buy new buckets). Refusals are
// codes.ResourceExhausted.
//
// The limiter runs after the TLS handshake and before the handler, so a refused
// request costs no token operation, no store access and no parsing beyond gRPC's own
// framing (whose size grpc.MaxRecvMsgSize bounds).
//
// Limiter satisfies the go-grpc-middleware ratelimit.Limiter interface, but its own
// interceptors are used: the middleware's rewrites every refusal into a new status
// whose message embeds the limiter's error text, which drops the status details a SET
// client reads its reason from (Config.Detail).
package rpclimit

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
)

// Defaults applied to zero Config fields (Rate has none: zero Rate disables the limiter).
const (
	DefaultMaxClients = 10000
)

// Config configures a Limiter.
type Config struct {
	// Rate is the sustained number of requests per second one client may make;
	// zero disables rate limiting (every request passes).
	Rate float64
	// Burst is how many requests a client may make at once after being idle;
	// zero means max(1, ceil(Rate)).
	Burst int
	// MaxClients bounds the buckets kept in memory; the least recently seen client
	// is forgotten first. Zero means DefaultMaxClients.
	MaxClients int
	// Exempt, if set, lets methods through unlimited (e.g. health checks), by full
	// method name "/package.Service/Method".
	Exempt func(fullMethod string) bool
	// Detail, if set, is attached to every refusal's status details (a SET server
	// passes its ErrorDetail so that clients read a reason).
	Detail protoadapt.MessageV1
	// Clock is for tests; nil means time.Now.
	Clock func() time.Time
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Rate < 0:
		return fmt.Errorf("rpclimit: rate %v is negative", c.Rate)
	case c.Burst < 0:
		return fmt.Errorf("rpclimit: burst %d is negative", c.Burst)
	case c.MaxClients < 0:
		return fmt.Errorf("rpclimit: max clients %d is negative", c.MaxClients)
	}
	return nil
}

// Limiter is a per-client token bucket. It is safe for concurrent use.
type Limiter struct {
	cfg     Config
	burst   int
	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     *list.List               // front: most recently seen
}

type bucket struct {
	key string
	lim *rate.Limiter
}

var _ ratelimit.Limiter = (*Limiter)(nil)

// New returns a Limiter for cfg.
func New(cfg Config) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxClients == 0 {
		cfg.MaxClients = DefaultMaxClients
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	burst := cfg.Burst
	if burst == 0 {
		burst = max(1, int(math.Ceil(cfg.Rate)))
	}
	return &Limiter{cfg: cfg, burst: burst, buckets: map[string]*list.Element{}, lru: list.New()}, nil
}

// Allow takes one token from key's bucket and reports whether there was one.
func (l *Limiter) Allow(key string) bool {
	if l == nil || l.cfg.Rate == 0 {
		return true
	}
	now := l.cfg.Clock()
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if e, ok := l.buckets[key]; ok {
		l.lru.MoveToFront(e)
		b = e.Value.(*bucket)
	} else {
		for len(l.buckets) >= l.cfg.MaxClients {
			old := l.lru.Back()
			delete(l.buckets, old.Value.(*bucket).key)
			l.lru.Remove(old)
		}
		// A new bucket starts full.
		b = &bucket{key: key, lim: rate.NewLimiter(rate.Limit(l.cfg.Rate), l.burst)}
		l.buckets[key] = l.lru.PushFront(b)
	}
	return b.lim.AllowN(now, 1)
}

// Clients is the number of buckets held.
func (l *Limiter) Clients() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// ErrNoPeer means a request carried no peer information (not a network request).
var ErrNoPeer = errors.New("rpclimit: no peer in context")

// ClientKey names the client of a request: "cert:<SHA-256 of the verified leaf>"
// when TLS verified a client certificate, else "addr:<host>" of the peer.
func ClientKey(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", ErrNoPeer
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		if vc := ti.State.VerifiedChains; len(vc) > 0 && len(vc[0]) > 0 {
			sum := sha256.Sum256(vc[0][0].Raw)
			return "cert:" + hex.EncodeToString(sum[:]), nil
		}
	}
	if p.Addr == nil {
		return "", ErrNoPeer
	}
	a := p.Addr.String()
	if host, _, err := net.SplitHostPort(a); err == nil {
		a = host
	}
	return "addr:" + strings.ToLower(a), nil
}

// Limit takes a token for the call in ctx (a server context, which names the
// method) and returns its refusal status (codes.ResourceExhausted, with Config.Detail)
// when the client has none left, or nil. It implements the go-grpc-middleware
// ratelimit.Limiter interface.
func (l *Limiter) Limit(ctx context.Context) error {
	method, _ := grpc.Method(ctx)
	return l.check(ctx, method)
}

func (l *Limiter) check(ctx context.Context, method string) error {
	if l == nil || l.cfg.Rate == 0 || (l.cfg.Exempt != nil && l.cfg.Exempt(method)) {
		return nil
	}
	key, err := ClientKey(ctx)
	if err != nil {
		key = "unknown" // all unidentifiable callers share one bucket
	}
	if l.Allow(key) {
		return nil
	}
	st := status.New(codes.ResourceExhausted, "rate limit exceeded: retry later")
	if l.cfg.Detail != nil {
		if sd, err := st.WithDetails(l.cfg.Detail); err == nil {
			st = sd
		}
	}
	return st.Err()
}

// UnaryServerInterceptor refuses unary calls over the client's rate.
func (l *Limiter) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := l.check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamServerInterceptor refuses streams over the client's rate (one token per
// stream, taken when it opens).
func (l *Limiter) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := l.check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return h(srv, ss)
	}
}

// ServerOptions chains both interceptors (after any set earlier with Chain*).
func (l *Limiter) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(l.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(l.StreamServerInterceptor()),
	}
}

// HealthExempt exempts the gRPC health service, which load balancers poll.
func HealthExempt(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/")
}
