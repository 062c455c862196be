// Package webui serves the cardholder's wallet as a local web application: the
// cards of a wallet directory (masked), registration of a card with the CCA, the
// SET payment initiation a storefront hands over (link or .setpay file) verified
// from the merchant's certificate chain, the confirmation of the merchant, the
// gateway, the order and the amount, the purchase, and a history with inquiry.
//
// It listens on loopback only. Access needs the random per-start token of the
// printed URL: visiting it sets an HttpOnly, SameSite=Lax session cookie, every
// page needs the cookie and every POST also the session's CSRF token. Pages are
// html/template without JavaScript and carry a strict Content-Security-Policy.
package webui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/wallet"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// CookieName is the session cookie.
const CookieName = "setpay_wallet"

// DefaultListen is the wallet UI's default address (storefronts link to it).
const DefaultListen = "127.0.0.1:7447"

const (
	maxSessions   = 32
	sessionTTL    = 12 * time.Hour
	maxPending    = 16
	maxUpload     = 1 << 20
	rpcTimeout    = 30 * time.Second
	csrfField     = "csrf"
	contentPolicy = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

// Dialer gives a client of the merchant's SET service at endpoint (host:port)
// whose TLS certificate names serverName. Implementations cache connections.
type Dialer func(ctx context.Context, endpoint, serverName string) (setpb.MerchantClient, error)

// Registrar registers a card with the cardholder CA into opts.Dir (see
// wallet.Register); it picks the key (a token key or a sealed software key).
type Registrar interface {
	Register(ctx context.Context, card wallet.CardInput, opts wallet.RegisterOptions) (*wallet.Identity, error)
}

// Config configures the wallet UI.
type Config struct {
	// Dir is the wallet directory: a card registered by `setpay wallet register`
	// in Dir itself, further cards in Dir/cards/*, the history in Dir/history.json.
	Dir string
	// Brand is the cards' brand ("SETPay" when empty).
	Brand string
	// Merchants dials merchants' SET services.
	Merchants Dialer
	// CRLs are fetched before every verification (revocation is always checked:
	// a CA without a current CRL makes its certificates untrusted).
	CRLs []pki.CRLFetcher
	// Registrar registers cards; nil: the register page says registration is not
	// configured.
	Registrar Registrar
	// FindKey finds a token wallet's key (nil: only software wallets open).
	FindKey wallet.KeyFinder
	Clock   func() time.Time
	Logger  *slog.Logger
}

// Server is the wallet UI.
type Server struct {
	cfg   Config
	token string
	pages map[string]*template.Template
	crls  *pki.MemoryCRLs
	hist  *history

	mu       sync.Mutex
	sessions map[string]*session
	trusts   map[[32]byte]*trustSet
	inits    map[string]*wallet.Initiator
}

type session struct {
	csrf    string
	created time.Time
	pending map[string]*pending
	flash   string
}

// New checks cfg, creates the wallet directory (0700) if needed and returns the
// server with a fresh random access token.
func New(cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("webui: no wallet directory")
	}
	if cfg.Merchants == nil {
		return nil, errors.New("webui: no merchant dialer")
	}
	if cfg.Brand == "" {
		cfg.Brand = "SETPay"
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("webui: wallet directory: %w", err)
	}
	tok, err := randomToken()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, token: tok, pages: map[string]*template.Template{}, crls: pki.NewMemoryCRLs(),
		hist: &history{path: historyPath(cfg.Dir)}, sessions: map[string]*session{},
		trusts: map[[32]byte]*trustSet{}, inits: map[string]*wallet.Initiator{}}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		base := strings.TrimPrefix(n, "templates/")
		if base == "layout.html" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("webui: template %s: %w", base, err)
		}
		s.pages[strings.TrimSuffix(base, ".html")] = t
	}
	return s, nil
}

// Token is the access token of this start.
func (s *Server) Token() string { return s.token }

// URL is the address to open: http://addr/?token=T.
func (s *Server) URL(addr string) string {
	return "http://" + addr + "/?token=" + url.QueryEscape(s.token)
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Listen listens on addr, which must be a loopback address (127.0.0.0/8, ::1 or
// localhost): the wallet is for the cardholder's own browser only.
func Listen(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("webui: listen address %q: %w", addr, err)
	}
	if !loopbackHost(host) {
		return nil, fmt.Errorf("webui: listen address %q is not a loopback address: the wallet UI listens on 127.0.0.1 or ::1 only", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("webui: %w", err)
	}
	if ta, ok := l.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		_ = l.Close()
		return nil, fmt.Errorf("webui: %q resolved to %s, not a loopback address", addr, l.Addr())
	}
	return l, nil
}

func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Serve serves the UI on l until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		return nil
	}
}

// Handler is the UI's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", s.authed(s.handleHome))
	mux.HandleFunc("GET /register", s.authed(s.handleRegisterForm))
	mux.HandleFunc("POST /register", s.authed(s.handleRegister))
	mux.HandleFunc("GET /receive", s.authed(s.handleReceive))
	mux.HandleFunc("POST /receive", s.authed(s.handleReceive))
	mux.HandleFunc("POST /pay", s.authed(s.handlePay))
	mux.HandleFunc("GET /history", s.authed(s.handleHistory))
	mux.HandleFunc("GET /purchase", s.authed(s.handlePurchase))
	mux.HandleFunc("POST /inquire", s.authed(s.handleInquire))
	return s.secure(mux)
}

// secure sets the security headers on every answer and refuses requests whose Host
// is not a loopback name (DNS rebinding).
func (s *Server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if !loopbackHost(strings.Trim(host, "[]")) {
			s.fail(w, r, nil, http.StatusMisdirectedRequest, page{Title: "Wrong address",
				Message: "This wallet answers only on its loopback address (127.0.0.1). Open it from the address it printed when it started."})
			return
		}
		next.ServeHTTP(w, r)
	})
}

type sessionKey struct{}

// authed requires the session cookie (GET /?token= makes one) and, on POST, the
// session's CSRF token and a same-origin Origin header when the browser sends one.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/" && r.URL.Query().Has("token") {
			s.login(w, r)
			return
		}
		sess := s.session(r)
		if sess == nil {
			s.fail(w, r, nil, http.StatusForbidden, page{Title: "Open the wallet from its address",
				Message: "This page needs the wallet's session. Open the wallet from the address `setpay wallet ui` printed when it started (http://127.0.0.1:PORT/?token=...), then follow the shop's link or open the payment file again."})
			return
		}
		if r.Method == http.MethodPost {
			if o := r.Header.Get("Origin"); o != "" && o != "null" {
				u, err := url.Parse(o)
				if err != nil || u.Host != r.Host {
					s.fail(w, r, sess, http.StatusForbidden, page{Title: "Request refused",
						Message: "This form was sent from another site (" + o + "); the wallet accepts forms from its own pages only."})
					return
				}
			}
			if err := parseForm(r); err != nil {
				s.fail(w, r, sess, http.StatusBadRequest, page{Title: "Request refused", Message: "The form could not be read: " + err.Error()})
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue(csrfField)), []byte(sess.csrf)) != 1 {
				s.fail(w, r, sess, http.StatusForbidden, page{Title: "Request refused",
					Message: "The form's security token is missing or wrong (CSRF protection). Reload the wallet page and send the form again."})
				return
			}
		}
		h(w, r, sess)
	}
}

func parseForm(r *http.Request) error {
	r.Body = http.MaxBytesReader(nil, r.Body, maxUpload+64<<10)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		return r.ParseMultipartForm(maxUpload)
	}
	return r.ParseForm()
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("token")), []byte(s.token)) != 1 {
		s.fail(w, r, nil, http.StatusForbidden, page{Title: "Wrong access token",
			Message: "This access token is not the one this wallet printed when it started. Open the exact address `setpay wallet ui` printed."})
		return
	}
	id, err := randomToken()
	if err != nil {
		s.internal(w, r, nil, err)
		return
	}
	csrf, err := randomToken()
	if err != nil {
		s.internal(w, r, nil, err)
		return
	}
	now := s.cfg.Clock()
	s.mu.Lock()
	for k, v := range s.sessions {
		if now.Sub(v.created) > sessionTTL {
			delete(s.sessions, k)
		}
	}
	if len(s.sessions) >= maxSessions {
		var oldest string
		for k, v := range s.sessions {
			if oldest == "" || v.created.Before(s.sessions[oldest].created) {
				oldest = k
			}
		}
		delete(s.sessions, oldest)
	}
	s.sessions[id] = &session{csrf: csrf, created: now, pending: map[string]*pending{}}
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) session(r *http.Request) *session {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[c.Value]
	if sess == nil || s.cfg.Clock().Sub(sess.created) > sessionTTL {
		return nil
	}
	return sess
}

// page is what every template gets.
type page struct {
	Title   string
	Message string // a refusal or error, in words
	Detail  string // the technical cause (never card data)
	Flash   string // a notice after a redirect
	CSRF    string
	Back    string // a link back
	Data    any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, sess *session, status int, name string, p page) {
	t := s.pages[name]
	if t == nil {
		http.Error(w, "no page "+name, http.StatusInternalServerError)
		return
	}
	if sess != nil {
		p.CSRF = sess.csrf
		s.mu.Lock()
		if p.Flash == "" {
			p.Flash, sess.flash = sess.flash, ""
		}
		s.mu.Unlock()
	}
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout", p); err != nil {
		s.cfg.Logger.ErrorContext(r.Context(), "wallet UI template", "page", name, "err", err)
		http.Error(w, "page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// fail renders the error page.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, sess *session, status int, p page) {
	if p.Back == "" && sess != nil {
		p.Back = "/"
	}
	s.cfg.Logger.InfoContext(r.Context(), "wallet UI refused", "path", r.URL.Path, "status", status, "title", p.Title, "detail", p.Detail)
	s.render(w, r, sess, status, "error", p)
}

func (s *Server) internal(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	s.cfg.Logger.ErrorContext(r.Context(), "wallet UI", "path", r.URL.Path, "err", err)
	s.fail(w, r, sess, http.StatusInternalServerError, page{Title: "Something went wrong", Message: "The wallet could not complete this: " + err.Error()})
}

func (s *Server) setFlash(sess *session, msg string) {
	s.mu.Lock()
	sess.flash = msg
	s.mu.Unlock()
}

var funcs = template.FuncMap{
	"money": money,
	"date":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
}

// money formats minor units as major.minor (two decimals).
func money(minor int64, currency string) string {
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	return fmt.Sprintf("%s%d.%02d %s", sign, minor/100, minor%100, currency)
}
