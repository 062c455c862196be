package shop

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Each checkout signs an initiation with the merchant's token key (the one that
// signs the SET answers too) and records an order for good: anyone can ask for one,
// so checkouts are rate limited per client IP with a token bucket.
const (
	DefaultCheckoutEvery = 3 * time.Second // one more checkout per 3 s per IP
	DefaultCheckoutBurst = 20
	maxCheckoutClients   = 10000
)

type limiter struct {
	mu    sync.Mutex
	every time.Duration
	burst int
	m     map[string]*rate.Limiter
}

func newLimiter(every time.Duration, burst int) *limiter {
	return &limiter{every: every, burst: burst, m: map[string]*rate.Limiter{}}
}

// allow takes one checkout from the bucket of r's client IP.
func (l *limiter) allow(r *http.Request, now time.Time) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[host]
	if !ok {
		if len(l.m) >= maxCheckoutClients {
			for h, v := range l.m { // forget the buckets that are full again
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.m, h)
				}
			}
			if len(l.m) >= maxCheckoutClients {
				return false // under a flood of addresses nobody new checks out
			}
		}
		lim = rate.NewLimiter(rate.Every(l.every), l.burst)
		l.m[host] = lim
	}
	return lim.AllowN(now, 1)
}
