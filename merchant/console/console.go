// Package console is the merchant operator's web console: the merchant's orders with
// their states and amounts; per order capture (all or part), refund (credit) and the
// reversals; settlement batches opened, closed and listed with their totals; the
// gateway's inquiry. Every action goes through the merchant's operator operations
// (merchant.Operate and friends), the code path of `setpay merchant capture|...`, and
// the page shows what the gateway's signed answer says.
//
// Access needs a credential: a login (a users file of name:bcrypt-hash lines), a TLS
// client certificate verified by the listener (mTLS), or both. Sessions are cookies
// (Secure, HttpOnly, SameSite=Strict) held in memory; every POST carries the
// session's CSRF token. The console never shows a card number: the merchant has
// none.
package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Operator is what the console asks of the merchant: *merchant.Merchant.
type Operator interface {
	ID() string
	Orders(ctx context.Context, state store.OrderState, limit int) ([]merchant.OrderSummary, error)
	Order(ctx context.Context, xid string) (*merchant.OrderSummary, error)
	Operate(ctx context.Context, op merchant.Operation, r merchant.OperatorRequest) (*merchant.Outcome, error)
	OperateBatch(ctx context.Context, action setpb.BatchAction, batchID string) (*merchant.Outcome, error)
	OperatorInquiry(ctx context.Context, xid string) (*merchant.Outcome, error)
}

// Defaults for zero Config fields.
const (
	DefaultSessionTTL   = 8 * time.Hour
	DefaultLoginEvery   = 12 * time.Second // one login attempt refilled per 12 s per IP
	DefaultLoginBurst   = 5
	DefaultGatewayLimit = time.Minute
	maxSessions         = 10000
	maxLoginClients     = 10000
	anonymousTTL        = 30 * time.Minute
	ordersShown         = 200
)

// Config configures the console.
type Config struct {
	Operator Operator
	// Users, if set, is asked for the operators on every login (so a user added to
	// the file needs no restart): the console requires a login.
	Users func() (Users, error)
	// ClientCert: the listener requires and verifies TLS client certificates
	// (client_ca); the console then refuses requests without a verified chain. With
	// Users too, both are required.
	ClientCert bool
	SessionTTL time.Duration // 0: DefaultSessionTTL
	// LoginEvery and LoginBurst are the per-IP login rate: LoginBurst attempts at
	// once, one more every LoginEvery. 0: the defaults.
	LoginEvery time.Duration
	LoginBurst int
	// GatewayTimeout bounds one action's request to the gateway (0: a minute).
	GatewayTimeout time.Duration
	Clock          func() time.Time
	Logger         *slog.Logger
}

// Console is the console's http.Handler.
type Console struct {
	cfg       Config
	pages     map[string]*template.Template
	sessions  *sessions
	limiter   *loginLimiter
	mux       *http.ServeMux
	static    http.Handler
	mu        sync.Mutex
	lastUsers Users // the last users file read well
	// dummies are compared against for unknown names, one per bcrypt cost, so a
	// wrong name costs the same bcrypt work as a wrong password of a listed user.
	dummies map[int][]byte
}

// New checks cfg and returns the console.
func New(cfg Config) (*Console, error) {
	if cfg.Operator == nil {
		return nil, errors.New("console: an operator (the merchant) is required")
	}
	if cfg.Users == nil && !cfg.ClientCert {
		return nil, errors.New("console: a credential is required: a users file, client certificates (client_ca), or both")
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.LoginEvery == 0 {
		cfg.LoginEvery = DefaultLoginEvery
	}
	if cfg.LoginBurst == 0 {
		cfg.LoginBurst = DefaultLoginBurst
	}
	if cfg.GatewayTimeout == 0 {
		cfg.GatewayTimeout = DefaultGatewayLimit
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Console{cfg: cfg, pages: map[string]*template.Template{}, sessions: newSessions(maxSessions),
		limiter: newLoginLimiter(cfg.LoginEvery, cfg.LoginBurst, maxLoginClients), dummies: map[int][]byte{}}
	if _, err := c.dummyHash(nil); err != nil {
		return nil, err
	}
	funcs := template.FuncMap{"money": Money, "title": func(s string) string {
		return strings.ToUpper(s[:1]) + strings.ReplaceAll(s[1:], "_", " ")
	}}
	for _, p := range []string{"login", "orders", "order", "batch", "error"} {
		t, err := template.New("").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", p, err)
		}
		c.pages[p] = t
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	c.static = http.StripPrefix("/static/", http.FileServerFS(static))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("POST /logout", c.authed(c.logout))
	mux.HandleFunc("GET /{$}", c.authed(c.ordersPage))
	mux.HandleFunc("GET /orders/{xid}", c.authed(c.orderPage))
	mux.HandleFunc("POST /orders/{xid}/{op}", c.authed(c.orderAction))
	mux.HandleFunc("POST /batches", c.authed(c.batchAction))
	mux.Handle("GET /static/", c.static)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.render(w, r, http.StatusNotFound, "error", &page{Title: "Not found", Error: "There is no page " + r.URL.Path + " in the console."})
	})
	c.mux = mux
	return c, nil
}

// Money shows an amount of minor units with two decimals (4990 is 49.90).
func Money(minor int64) string {
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	return fmt.Sprintf("%s%d.%02d", sign, minor/100, minor%100)
}

// csp allows the console's own stylesheet and nothing else: no script at all.
const csp = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// ServeHTTP sets the security headers on every answer and dispatches.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Strict-Transport-Security", "max-age=31536000")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodPost && !sameOrigin(r) {
		c.render(w, r, http.StatusForbidden, "error", &page{Title: "Refused", Error: "This form was sent from another site; the console refused it."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	c.mux.ServeHTTP(w, r)
}

// sameOrigin refuses a POST a browser says came from another site (besides the CSRF
// token every POST must carry). With Referrer-Policy no-referrer browsers send
// "Origin: null" on the console's own forms.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// page is what every template gets.
type page struct {
	Title    string
	User     string
	CSRF     string
	Merchant string
	Error    string
	Notice   string
	Name     string // the login form's name, kept after a failed attempt
	Outcome  *merchant.Outcome
	Orders   []merchant.OrderSummary
	States   []string
	State    string
	Order    *merchant.OrderSummary
	Ops      []opForm
	Batch    *merchant.BatchState
	BatchID  string
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p *page) {
	if p.Merchant == "" {
		p.Merchant = c.cfg.Operator.ID()
	}
	var b bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&b, "layout", p); err != nil {
		c.cfg.Logger.Error("console: render", "page", name, "err", err)
		http.Error(w, "the console could not show this page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// certFingerprint is the SHA-256 of the verified client certificate, "" for none.
func certFingerprint(r *http.Request) (fp, name string) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", ""
	}
	leaf := r.TLS.VerifiedChains[0][0]
	sum := sha256.Sum256(leaf.Raw)
	return hex.EncodeToString(sum[:]), leaf.Subject.CommonName
}

// current is r's live session, if any; one of another client certificate is none.
func (c *Console) current(r *http.Request) (string, session, bool) {
	ck, err := r.Cookie(CookieName)
	if err != nil {
		return "", session{}, false
	}
	sess, ok := c.sessions.get(ck.Value, c.cfg.Clock())
	if !ok {
		return "", session{}, false
	}
	if fp, _ := certFingerprint(r); sess.certFP != fp {
		return "", session{}, false
	}
	return ck.Value, sess, true
}

// authed runs h for a request with a logged-in session whose POST carries its CSRF
// token; others go to the login page (GET) or are refused (POST).
func (c *Console) authed(h func(w http.ResponseWriter, r *http.Request, id string, s session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fp, cn := certFingerprint(r)
		if c.cfg.ClientCert && fp == "" {
			c.render(w, r, http.StatusUnauthorized, "error", &page{Title: "Certificate required",
				Error: "The console needs a client certificate from its client CA."})
			return
		}
		id, sess, ok := c.current(r)
		if ok && sess.user == "" {
			ok = false
		}
		if !ok && c.cfg.Users == nil {
			// Client certificates alone: the verified certificate is the login.
			now := c.cfg.Clock()
			sess = session{user: "cert:" + cn, certFP: fp, expires: now.Add(c.cfg.SessionTTL)}
			if r.Method == http.MethodPost {
				// A POST without a session has no CSRF token to carry.
				c.render(w, r, http.StatusForbidden, "error", &page{Title: "Refused",
					Error: "The form's session has ended; open the console again and repeat the action."})
				return
			}
			id = c.sessions.create(sess, now)
			sess, _ = c.sessions.get(id, now)
			setCookie(w, id, c.cfg.SessionTTL)
			ok = true
		}
		if !ok {
			if r.Method == http.MethodPost {
				c.render(w, r, http.StatusUnauthorized, "error", &page{Title: "Log in",
					Error: "You are not logged in (or your session has ended). Log in and repeat the action."})
				return
			}
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			if err := r.ParseForm(); err != nil {
				c.render(w, r, http.StatusBadRequest, "error", &page{Title: "Bad request", Error: "The form could not be read."})
				return
			}
			if !csrfOK(sess, r.PostForm.Get("csrf")) {
				c.render(w, r, http.StatusForbidden, "error", &page{Title: "Refused", User: sess.user, CSRF: sess.csrf,
					Error: "The form's security token is missing or wrong (a form from an old session, or from another site). Open the page again and repeat the action."})
				return
			}
		}
		h(w, r, id, sess)
	}
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Users == nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if _, sess, ok := c.current(r); ok {
		if sess.user != "" {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		c.render(w, r, http.StatusOK, "login", &page{Title: "Log in", CSRF: sess.csrf})
		return
	}
	c.render(w, r, http.StatusOK, "login", &page{Title: "Log in", CSRF: c.anonymous(w, r)})
}

// anonymous starts a session for the login form and returns its CSRF token.
func (c *Console) anonymous(w http.ResponseWriter, r *http.Request) string {
	now := c.cfg.Clock()
	fp, _ := certFingerprint(r)
	id := c.sessions.create(session{certFP: fp, expires: now.Add(anonymousTTL)}, now)
	sess, _ := c.sessions.get(id, now)
	setCookie(w, id, anonymousTTL)
	return sess.csrf
}

// errLogin is the one answer to a wrong name, a wrong password or both.
const errLogin = "Wrong name or password."

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Users == nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if c.cfg.ClientCert {
		if fp, _ := certFingerprint(r); fp == "" {
			c.render(w, r, http.StatusUnauthorized, "error", &page{Title: "Certificate required",
				Error: "The console needs a client certificate from its client CA."})
			return
		}
	}
	if err := r.ParseForm(); err != nil {
		c.render(w, r, http.StatusBadRequest, "error", &page{Title: "Bad request", Error: "The form could not be read."})
		return
	}
	oldID, sess, ok := c.current(r)
	if !ok || !csrfOK(sess, r.PostForm.Get("csrf")) {
		c.render(w, r, http.StatusForbidden, "login", &page{Title: "Log in", CSRF: c.anonymous(w, r),
			Error: "The login form's security token is missing or has expired. Log in again."})
		return
	}
	name := r.PostForm.Get("name")
	fail := func(status int, msg string) {
		c.render(w, r, status, "login", &page{Title: "Log in", CSRF: sess.csrf, Name: name, Error: msg})
	}
	now := c.cfg.Clock()
	if !c.limiter.allow(r, now) {
		c.cfg.Logger.Warn("console login refused", "result", "RATE_LIMITED", "remote", r.RemoteAddr)
		fail(http.StatusTooManyRequests, "Too many login attempts from your address. Wait a minute and try again.")
		return
	}
	users, err := c.users()
	if err != nil {
		fail(http.StatusServiceUnavailable, "The console cannot read its users file now; tell the merchant's administrator.")
		return
	}
	hash, known := users[name]
	if !known {
		if hash, err = c.dummyHash(users); err != nil {
			c.cfg.Logger.Error("console: dummy hash", "err", err)
			fail(http.StatusServiceUnavailable, "The console cannot check logins now; tell the merchant's administrator.")
			return
		}
	}
	password := []byte(r.PostForm.Get("password"))
	if bcrypt.CompareHashAndPassword(hash, password) != nil || !known {
		c.cfg.Logger.Warn("console login refused", "result", "REFUSED", "remote", r.RemoteAddr)
		fail(http.StatusUnauthorized, errLogin)
		return
	}
	// A new session ID on login: one planted before it is worth nothing after.
	c.sessions.delete(oldID)
	fp, _ := certFingerprint(r)
	id := c.sessions.create(session{user: name, certFP: fp, expires: now.Add(c.cfg.SessionTTL)}, now)
	setCookie(w, id, c.cfg.SessionTTL)
	c.cfg.Logger.Info("console login", "user", name, "result", "OK", "remote", r.RemoteAddr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// dummyHash is a hash of no password at the highest bcrypt cost among users
// (DefaultCost when none): a users file made with another tool may use another
// cost than setpay's, and an unknown name must not answer faster or slower than a
// known one.
func (c *Console) dummyHash(users Users) ([]byte, error) {
	cost := 0
	for _, h := range users {
		if n, err := bcrypt.Cost(h); err == nil && n > cost {
			cost = n
		}
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.dummies[cost]; ok {
		return h, nil
	}
	h, err := bcrypt.GenerateFromPassword([]byte("setpay console: no such user"), cost)
	if err != nil {
		return nil, err
	}
	c.dummies[cost] = h
	return h, nil
}

// users reads the users file again; when that fails it keeps the last good one.
func (c *Console) users() (Users, error) {
	u, err := c.cfg.Users()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.cfg.Logger.Error("console: users file", "err", err)
		if c.lastUsers == nil {
			return nil, err
		}
		return c.lastUsers, nil
	}
	c.lastUsers = u
	return u, nil
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, id string, s session) {
	c.sessions.delete(id)
	clearCookie(w)
	c.cfg.Logger.Info("console logout", "user", s.user)
	if c.cfg.Users == nil {
		c.render(w, r, http.StatusOK, "error", &page{Title: "Logged out", Notice: "You are logged out. Open the console again to continue."})
		return
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (c *Console) ordersPage(w http.ResponseWriter, r *http.Request, _ string, s session) {
	p := &page{Title: "Orders", User: s.user, CSRF: s.csrf}
	for _, st := range merchant.OrderStates {
		p.States = append(p.States, string(st))
	}
	state := r.URL.Query().Get("state")
	status := http.StatusOK
	if state != "" && !contains(p.States, state) {
		p.Error = fmt.Sprintf("There is no order state %q; showing all orders.", state)
		state, status = "", http.StatusBadRequest
	}
	p.State = state
	orders, err := c.cfg.Operator.Orders(r.Context(), store.OrderState(state), ordersShown)
	if err != nil {
		c.cfg.Logger.Error("console: orders", "err", err)
		p.Error = "The merchant's store could not be read; try again."
		status = http.StatusInternalServerError
	}
	p.Orders = orders
	c.render(w, r, status, "orders", p)
}

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// opForm is one action form on an order's page.
type opForm struct {
	Name, Label, Help string
	Amount            merchant.AmountRule
	Target            string
	Batch             bool
}

// operationForms are the action forms of an order's page, one per operation.
func operationForms() []opForm {
	labels := map[string][2]string{
		"capture":         {"Capture", "Capture the authorized amount, or part of it. Leave the amount empty to capture the whole order."},
		"credit":          {"Refund", "Refund (credit) part or all of what was captured."},
		"reverse-auth":    {"Reverse authorization", "Release the authorization: leave the amount empty for everything not captured."},
		"reverse-capture": {"Reverse capture", "Undo all or part of one capture, named by its item ID."},
		"reverse-credit":  {"Reverse refund", "Undo all or part of one refund, named by its item ID."},
	}
	var out []opForm
	for _, op := range merchant.Operations() {
		l := labels[op.Name]
		out = append(out, opForm{Name: op.Name, Label: l[0], Help: l[1], Amount: op.Amount, Target: op.Target, Batch: op.Batch})
	}
	return out
}

func (c *Console) orderFor(w http.ResponseWriter, r *http.Request, s session) (*page, bool) {
	p := &page{Title: "Order", User: s.user, CSRF: s.csrf, Ops: operationForms()}
	o, err := c.cfg.Operator.Order(r.Context(), r.PathValue("xid"))
	if err != nil {
		status := http.StatusInternalServerError
		msg := "The merchant's store could not be read; try again."
		var ie *merchant.InputError
		switch {
		case errors.As(err, &ie), setproto.ReasonOf(err) == setpb.Reason_UNKNOWN_TRANSACTION:
			status, msg = http.StatusNotFound, "There is no order "+r.PathValue("xid")+"."
		default:
			c.cfg.Logger.Error("console: order", "err", err)
		}
		c.render(w, r, status, "error", &page{Title: "Order", User: s.user, CSRF: s.csrf, Error: msg})
		return nil, false
	}
	p.Order = o
	p.Title = "Order " + o.XID
	return p, true
}

func (c *Console) orderPage(w http.ResponseWriter, r *http.Request, _ string, s session) {
	if p, ok := c.orderFor(w, r, s); ok {
		c.render(w, r, http.StatusOK, "order", p)
	}
}

func (c *Console) orderAction(w http.ResponseWriter, r *http.Request, _ string, s session) {
	p, ok := c.orderFor(w, r, s)
	if !ok {
		return
	}
	name := r.PathValue("op")
	ctx, cancel := context.WithTimeout(r.Context(), c.cfg.GatewayTimeout)
	defer cancel()
	var out *merchant.Outcome
	var err error
	if name == "inquiry" {
		out, err = c.cfg.Operator.OperatorInquiry(ctx, p.Order.XID)
	} else {
		op, known := merchant.OperationByName(name)
		if !known {
			c.render(w, r, http.StatusNotFound, "error", &page{Title: "Order", User: s.user, CSRF: s.csrf, Error: "There is no action " + name + "."})
			return
		}
		req := merchant.OperatorRequest{XID: p.Order.XID, BatchID: strings.TrimSpace(r.PostForm.Get("batch")),
			TargetID: strings.TrimSpace(r.PostForm.Get("target")), RequestID: strings.TrimSpace(r.PostForm.Get("request_id"))}
		if a := strings.TrimSpace(r.PostForm.Get("amount")); a != "" {
			if req.Amount, err = merchant.ParseAmount(a, op.Amount == merchant.AmountZeroMeansAll); err != nil {
				err = &merchant.InputError{Field: "amount", Problem: err.Error(), Err: err}
			}
		}
		if err == nil {
			out, err = c.cfg.Operator.Operate(ctx, op, req)
		}
	}
	status := c.outcome(p, s, name, p.Order.XID, out, err)
	if o, e := c.cfg.Operator.Order(r.Context(), p.Order.XID); e == nil {
		p.Order = o // the state the answer moved it to
	}
	c.render(w, r, status, "order", p)
}

// outcome puts an action's outcome (or its refusal, in words) on p and returns the
// page's status.
func (c *Console) outcome(p *page, s session, action, subject string, out *merchant.Outcome, err error) int {
	if err == nil {
		c.cfg.Logger.Info("console action", "user", s.user, "action", action, "subject", subject, "rrpid", out.RRPID, "result", "OK")
		p.Outcome = out
		p.Notice = "The gateway answered " + action + " " + subject + " (its signed answer is verified)."
		return http.StatusOK
	}
	var ie *merchant.InputError
	if errors.As(err, &ie) {
		c.cfg.Logger.Info("console action", "user", s.user, "action", action, "subject", subject, "result", "NOT_SENT", "err", err)
	} else {
		c.cfg.Logger.Warn("console action", "user", s.user, "action", action, "subject", subject, "result", "REFUSED",
			"reason", setproto.ReasonOf(err).String(), "err", err)
	}
	switch reason := setproto.ReasonOf(err); {
	case errors.As(err, &ie):
		p.Error = "Not sent: " + fieldLabel(ie.Field) + ": " + ie.Problem + "."
		return http.StatusBadRequest
	case reason == setpb.Reason_GATEWAY_UNAVAILABLE || errors.Is(err, context.DeadlineExceeded):
		p.Error = "The gateway did not answer. Sending the same form again is safe: the same request is never applied twice."
		return http.StatusBadGateway
	case reason != setpb.Reason_REASON_UNSPECIFIED && reason != setpb.Reason_INTERNAL:
		p.Error = "Refused (" + reason.String() + "): " + reasonWords(reason) + " Detail: " + errorText(err)
		return http.StatusUnprocessableEntity
	default:
		p.Error = "The action failed: " + errorText(err)
		return http.StatusBadGateway
	}
}

func fieldLabel(f string) string {
	switch f {
	case "target":
		return "item ID"
	case "request_id":
		return "request ID"
	case "batch":
		return "batch ID"
	case "xid":
		return "order (XID)"
	}
	return f
}

// reasonWords says what a refusal's reason means for the operator.
func reasonWords(r setpb.Reason) string {
	switch r {
	case setpb.Reason_AMOUNT_EXCEEDED:
		return "the amount is more than the purchase allows (more than authorized, captured or refunded)."
	case setpb.Reason_INVALID_STATE:
		return "the purchase or the batch is in a state that does not allow this (reversed, declined, or a closed batch)."
	case setpb.Reason_UNKNOWN_TRANSACTION:
		return "the gateway or the merchant knows no such purchase, item or batch."
	case setpb.Reason_REPLAY:
		return "this request ID was already used for a different request; give a new request ID."
	case setpb.Reason_AUTH_EXPIRED:
		return "the authorization is past its capture period."
	case setpb.Reason_MALFORMED:
		return "the request is not well formed."
	}
	return "the gateway refused the request."
}

// errorText is err's message without the "set: REASON:" and gRPC prefixes.
func errorText(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "desc = "); i >= 0 {
		s = s[i+len("desc = "):]
	}
	if rest, ok := strings.CutPrefix(s, "set: "); ok {
		if _, after, ok := strings.Cut(rest, ": "); ok {
			s = after
		}
	}
	return s
}

func (c *Console) batchAction(w http.ResponseWriter, r *http.Request, _ string, s session) {
	p := &page{Title: "Batch", User: s.user, CSRF: s.csrf, BatchID: strings.TrimSpace(r.PostForm.Get("batch"))}
	var action setpb.BatchAction
	switch r.PostForm.Get("action") {
	case "open":
		action = setpb.BatchAction_BATCH_OPEN
	case "close":
		action = setpb.BatchAction_BATCH_CLOSE
	case "list":
		action = setpb.BatchAction_BATCH_QUERY
	default:
		p.Error = "Choose open, close or list."
		c.render(w, r, http.StatusBadRequest, "batch", p)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.cfg.GatewayTimeout)
	defer cancel()
	out, err := c.cfg.Operator.OperateBatch(ctx, action, p.BatchID)
	status := c.outcome(p, s, "batch "+merchant.BatchVerb(action), p.BatchID, out, err)
	if out != nil {
		p.Batch = out.Batch
		p.Title = "Batch " + p.BatchID
	}
	c.render(w, r, status, "batch", p)
}

// AmountRequired and AmountHelp tell the order page how to label the amount field.
func (f opForm) AmountRequired() bool { return f.Amount == merchant.AmountRequired }

func (f opForm) AmountHelp() string {
	switch f.Amount {
	case merchant.AmountOrderTotal:
		return "optional; empty: the order's amount"
	case merchant.AmountZeroMeansAll:
		return "optional; empty: everything not captured"
	}
	return "required"
}
