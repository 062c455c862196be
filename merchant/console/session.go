package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// CookieName is the session cookie. The __Host- prefix makes browsers accept it only
// Secure, for this host, with path /.
const CookieName = "__Host-setpay-console"

// session is a browser's session: anonymous (User "") until a login succeeds, so
// that the login form has its CSRF token too.
type session struct {
	user    string
	csrf    string
	certFP  string // the client certificate the session belongs to (mTLS), if any
	expires time.Time
}

// sessions are the console's sessions, in memory: a restart logs everyone out.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	max int
}

func newSessions(max int) *sessions { return &sessions{m: map[string]*session{}, max: max} }

func randomToken() string {
	b := make([]byte, 32)
	// Since Go 1.24 crypto/rand.Read never returns an error: the runtime stops the
	// program itself when the system's random source fails, so there is nothing to
	// handle here (and no panic of ours).
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create makes a session and returns its ID.
func (s *sessions) create(sess session, now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= s.max {
		for id, v := range s.m {
			if now.After(v.expires) {
				delete(s.m, id)
			}
		}
		for id, v := range s.m { // still full: forget anonymous ones first, then any
			if len(s.m) < s.max {
				break
			}
			if v.user == "" {
				delete(s.m, id)
			}
		}
		for id := range s.m {
			if len(s.m) < s.max {
				break
			}
			delete(s.m, id)
		}
	}
	id := randomToken()
	sess.csrf = randomToken()
	s.m[id] = &sess
	return id
}

// get is the live session id names (a copy), if any.
func (s *sessions) get(id string, now time.Time) (session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[id]
	if !ok {
		return session{}, false
	}
	if now.After(v.expires) {
		delete(s.m, id)
		return session{}, false
	}
	return *v, true
}

func (s *sessions) delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// csrfOK compares a form's CSRF token with the session's in constant time.
func csrfOK(sess session, got string) bool {
	return sess.csrf != "" && subtle.ConstantTimeCompare([]byte(sess.csrf), []byte(got)) == 1
}

func setCookie(w http.ResponseWriter, id string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: "/", MaxAge: int(maxAge / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// loginLimiter bounds login attempts per client IP: a token bucket each.
type loginLimiter struct {
	mu    sync.Mutex
	every time.Duration
	burst int
	m     map[string]*rate.Limiter
	max   int
}

func newLoginLimiter(every time.Duration, burst, max int) *loginLimiter {
	return &loginLimiter{every: every, burst: burst, m: map[string]*rate.Limiter{}, max: max}
}

// allow takes one attempt from the bucket of r's client IP.
func (l *loginLimiter) allow(r *http.Request, now time.Time) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[host]
	if !ok {
		if len(l.m) >= l.max {
			// Forget the buckets that are full again (their clients idle long enough).
			for h, v := range l.m {
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.m, h)
				}
			}
			if len(l.m) >= l.max {
				return false // under a flood of addresses nobody new logs in
			}
		}
		lim = rate.NewLimiter(rate.Every(l.every), l.burst)
		l.m[host] = lim
	}
	return lim.AllowN(now, 1)
}
