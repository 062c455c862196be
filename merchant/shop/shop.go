// Package shop is the merchant's web storefront: a catalogue of the merchant's
// configured offers, a cart, a checkout that records the cart as an order and hands
// the cardholder's wallet a signed SET payment initiation (a .setpay download and a
// link to the local wallet), and an order page showing the order's state from the
// merchant's store as it changes. It never sees or shows card data: the card goes
// from the wallet to the gateway under SET.
package shop

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/store"
)

//go:embed templates/*.html static/*
var content embed.FS

// Defaults.
const (
	DefaultWalletURL          = "http://127.0.0.1:7447"
	DefaultMaxQuantity        = 10
	DefaultInitiationValidity = 30 * time.Minute
)

// Config configures a Shop.
type Config struct {
	Sign       setproto.Party // the merchant's SET signature key (token) and chain: signs initiations
	MACKey     merchant.MACKey
	Store      store.DB // the merchant's store
	MerchantID string
	Brands     []string
	Offers     []merchant.Offer
	// Endpoint and ServerName are the merchant's SET gRPC address and TLS name as
	// wallets reach them.
	Endpoint, ServerName string
	WalletURL            string // default DefaultWalletURL
	MaxQuantity          int    // per cart line; default DefaultMaxQuantity
	InitiationValidity   time.Duration
	// CheckoutEvery and CheckoutBurst are the per-IP checkout rate: CheckoutBurst
	// checkouts at once, one more every CheckoutEvery (0: the defaults).
	CheckoutEvery time.Duration
	CheckoutBurst int
	Clock         func() time.Time
	Logger        *slog.Logger
}

// Shop serves the storefront.
type Shop struct {
	cfg      Config
	book     *Book
	offers   []merchant.Offer
	byID     map[string]merchant.Offer
	offerIDs map[string]bool
	tmpl     map[string]*template.Template
	mux      *http.ServeMux
	limit    *limiter
}

// New checks cfg and returns the shop.
func New(cfg Config) (*Shop, error) {
	switch {
	case cfg.Sign.Key == nil || cfg.Sign.Cert == nil:
		return nil, errors.New("shop: the merchant's signature key is required")
	case cfg.MACKey == nil || cfg.Store == nil:
		return nil, errors.New("shop: a MAC key and the merchant's store are required")
	case len(cfg.Offers) == 0:
		return nil, errors.New("shop: no offers to sell")
	case cfg.Endpoint == "" || cfg.MerchantID == "" || len(cfg.Brands) == 0:
		return nil, errors.New("shop: the merchant's SET endpoint, id and brand are required")
	}
	if cfg.WalletURL == "" {
		cfg.WalletURL = DefaultWalletURL
	}
	if cfg.MaxQuantity <= 0 {
		cfg.MaxQuantity = DefaultMaxQuantity
	}
	if cfg.InitiationValidity <= 0 {
		cfg.InitiationValidity = DefaultInitiationValidity
	}
	if cfg.InitiationValidity > setproto.MaxInitiationLifetime {
		return nil, fmt.Errorf("shop: initiation validity over %s", setproto.MaxInitiationLifetime)
	}
	if cfg.CheckoutEvery <= 0 {
		cfg.CheckoutEvery = DefaultCheckoutEvery
	}
	if cfg.CheckoutBurst <= 0 {
		cfg.CheckoutBurst = DefaultCheckoutBurst
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Shop{cfg: cfg, book: &Book{DB: cfg.Store, Clock: cfg.Clock}, byID: map[string]merchant.Offer{}, offerIDs: map[string]bool{}, tmpl: map[string]*template.Template{},
		limit: newLimiter(cfg.CheckoutEvery, cfg.CheckoutBurst)}
	for _, o := range cfg.Offers {
		// The description goes into the signed initiation the wallet shows: refused
		// here, not at the first checkout.
		if err := setproto.ValidateOrderDescription(o.Description); err != nil {
			return nil, fmt.Errorf("shop: offer %s: %w", o.ID, err)
		}
		s.offers = append(s.offers, o)
		s.byID[o.ID] = o
		s.offerIDs[o.ID] = true
	}
	funcs := template.FuncMap{"money": money, "state": stateLabel, "final": final}
	for _, page := range []string{"catalogue", "cart", "order", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(content, "templates/layout.html", "templates/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("shop: template %s: %w", page, err)
		}
		s.tmpl[page] = t
	}
	static, err := fs.Sub(content, "static")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.catalogue)
	mux.HandleFunc("GET /cart", s.showCart)
	mux.HandleFunc("POST /cart/add", s.addToCart)
	mux.HandleFunc("POST /cart/update", s.updateCart)
	mux.HandleFunc("POST /checkout", s.checkout)
	mux.HandleFunc("GET /order/{ref}", s.order)
	mux.HandleFunc("GET /order/{ref}/initiation", s.initiation)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "There is no such page.")
	})
	s.mux = mux
	return s, nil
}

// Book is the shop's order book; the merchant must be configured with it
// (merchant.Config.OfferBook) for checkouts to be payable.
func (s *Shop) Book() *Book { return s.book }

// NewBook is the offer book for a merchant whose storefront uses db.
func NewBook(db store.DB) *Book { return &Book{DB: db} }

// Handler is the storefront with its security headers and cross-origin protection.
func (s *Shop) Handler() http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusForbidden, "This form was sent from another site; it was refused.")
	}))
	inner := cop.Handler(s.mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		h.Set("Cache-Control", "no-store")
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		inner.ServeHTTP(w, r)
	})
}

type page struct {
	Title   string
	CSRF    string
	Error   string
	Refresh int // seconds; 0: none
	Data    any
}

func (s *Shop) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	var b strings.Builder
	if err := s.tmpl[name].Execute(&b, p); err != nil {
		s.cfg.Logger.Error("shop page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

func (s *Shop) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, r, status, "error", page{Title: http.StatusText(status), Error: msg})
}

func (s *Shop) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.cfg.Logger.Error("shop", "op", what, "err", err)
	s.fail(w, r, http.StatusInternalServerError, "Something went wrong on our side; please try again.")
}

// sessionPage starts a page of a session: its id and CSRF token.
func (s *Shop) sessionPage(w http.ResponseWriter, r *http.Request) (string, string, error) {
	sid, err := s.session(w, r)
	if err != nil {
		return "", "", err
	}
	tok, err := s.csrfToken(r.Context(), sid)
	return sid, tok, err
}

type catalogueData struct {
	Offers    []merchant.Offer
	CartItems int
	Max       int
}

func (s *Shop) catalogue(w http.ResponseWriter, r *http.Request) {
	sid, tok, err := s.sessionPage(w, r)
	if err != nil {
		s.internal(w, r, "session", err)
		return
	}
	n := 0
	for _, q := range s.readCart(r.Context(), r, sid) {
		n += q
	}
	s.render(w, r, http.StatusOK, "catalogue", page{Title: "Catalogue", CSRF: tok, Data: catalogueData{Offers: s.offers, CartItems: n, Max: s.cfg.MaxQuantity}})
}

type cartLine struct {
	Offer    merchant.Offer
	Quantity int
	Total    int64
}

type cartData struct {
	Lines    []cartLine
	Total    int64
	Currency string
	Max      int
}

func (s *Shop) cartView(c cart) (cartData, error) {
	d := cartData{Max: s.cfg.MaxQuantity}
	for _, o := range s.offers { // catalogue order
		q, ok := c[o.ID]
		if !ok {
			continue
		}
		if d.Currency != "" && d.Currency != o.Currency {
			return d, errors.New("The cart holds goods priced in different currencies; pay them separately.")
		}
		d.Currency = o.Currency
		d.Lines = append(d.Lines, cartLine{Offer: o, Quantity: q, Total: o.Amount * int64(q)})
		d.Total += o.Amount * int64(q)
	}
	if d.Total > setproto.MaxAmount {
		return d, errors.New("The cart's total is over the largest amount that can be paid at once.")
	}
	return d, nil
}

func (s *Shop) showCart(w http.ResponseWriter, r *http.Request) {
	sid, tok, err := s.sessionPage(w, r)
	if err != nil {
		s.internal(w, r, "session", err)
		return
	}
	s.renderCart(w, r, http.StatusOK, tok, s.readCart(r.Context(), r, sid), "")
}

func (s *Shop) renderCart(w http.ResponseWriter, r *http.Request, status int, tok string, c cart, msg string) {
	d, err := s.cartView(c)
	if err != nil && msg == "" {
		msg = err.Error()
	}
	s.render(w, r, status, "cart", page{Title: "Your cart", CSRF: tok, Error: msg, Data: d})
}

// post checks the CSRF token of a form and returns the session.
func (s *Shop) post(w http.ResponseWriter, r *http.Request) (sid, tok string, ok bool) {
	if err := r.ParseForm(); err != nil {
		s.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return "", "", false
	}
	if !s.checkCSRF(r.Context(), r) {
		s.fail(w, r, http.StatusForbidden, "This form has expired or did not come from this shop. Go back, reload the page and try again.")
		return "", "", false
	}
	sid, tok, err := s.sessionPage(w, r)
	if err != nil {
		s.internal(w, r, "session", err)
		return "", "", false
	}
	return sid, tok, true
}

func (s *Shop) quantity(v string) (int, string) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 || n > s.cfg.MaxQuantity {
		return 0, fmt.Sprintf("Quantity must be a whole number from 1 to %d.", s.cfg.MaxQuantity)
	}
	return n, ""
}

func (s *Shop) addToCart(w http.ResponseWriter, r *http.Request) {
	sid, tok, ok := s.post(w, r)
	if !ok {
		return
	}
	c := s.readCart(r.Context(), r, sid)
	id := r.PostFormValue("offer")
	if !s.offerIDs[id] {
		s.renderCart(w, r, http.StatusBadRequest, tok, c, "That item is not in the catalogue.")
		return
	}
	n, msg := s.quantity(r.PostFormValue("quantity"))
	if msg == "" && n == 0 {
		msg = fmt.Sprintf("Quantity must be a whole number from 1 to %d.", s.cfg.MaxQuantity)
	}
	if msg == "" && c[id]+n > s.cfg.MaxQuantity {
		msg = fmt.Sprintf("At most %d of one item fit in a cart.", s.cfg.MaxQuantity)
	}
	if msg != "" {
		s.renderCart(w, r, http.StatusBadRequest, tok, c, msg)
		return
	}
	c[id] += n
	if err := s.writeCart(r.Context(), w, sid, c); err != nil {
		s.internal(w, r, "cart", err)
		return
	}
	http.Redirect(w, r, "/cart", http.StatusSeeOther)
}

func (s *Shop) updateCart(w http.ResponseWriter, r *http.Request) {
	sid, tok, ok := s.post(w, r)
	if !ok {
		return
	}
	c := s.readCart(r.Context(), r, sid)
	next := cart{}
	for id := range c {
		v := r.PostFormValue("qty-" + id)
		if r.PostFormValue("remove") == id {
			continue
		}
		if v == "" {
			next[id] = c[id]
			continue
		}
		n, msg := s.quantity(v)
		if msg != "" {
			s.renderCart(w, r, http.StatusBadRequest, tok, c, msg)
			return
		}
		if n > 0 {
			next[id] = n
		}
	}
	if err := s.writeCart(r.Context(), w, sid, next); err != nil {
		s.internal(w, r, "cart", err)
		return
	}
	http.Redirect(w, r, "/cart", http.StatusSeeOther)
}

func (s *Shop) checkout(w http.ResponseWriter, r *http.Request) {
	sid, tok, ok := s.post(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	c := s.readCart(ctx, r, sid)
	if len(c) == 0 {
		s.renderCart(w, r, http.StatusBadRequest, tok, c, "The cart is empty: add something first.")
		return
	}
	d, err := s.cartView(c)
	if err != nil {
		s.renderCart(w, r, http.StatusBadRequest, tok, c, err.Error())
		return
	}
	if !s.limit.allow(r, s.cfg.Clock()) {
		s.cfg.Logger.Warn("shop checkout refused", "result", "RATE_LIMITED", "remote", r.RemoteAddr)
		s.renderCart(w, r, http.StatusTooManyRequests, tok, c, "Too many checkouts from your address just now. Wait a minute and check out again; your cart is kept.")
		return
	}
	o, err := s.newOrder(ctx, d)
	if err != nil {
		s.internal(w, r, "checkout", err)
		return
	}
	if err := s.writeCart(ctx, w, sid, nil); err != nil {
		s.internal(w, r, "cart", err)
		return
	}
	s.cfg.Logger.Info("shop checkout", "order", o.Ref, "amount", o.Amount, "currency", o.Currency, "lines", len(o.Lines))
	http.Redirect(w, r, "/order/"+o.Ref, http.StatusSeeOther)
}

// newOrder records the cart d as an order and signs its initiation.
func (s *Shop) newOrder(ctx context.Context, d cartData) (*Order, error) {
	ref, err := newRef()
	if err != nil {
		return nil, err
	}
	now := s.cfg.Clock().Truncate(time.Second)
	o := &Order{Ref: ref, Amount: d.Total, Currency: d.Currency, Sale: true, CreatedAt: now, ExpiresAt: now.Add(s.cfg.InitiationValidity)}
	var desc []string
	for _, l := range d.Lines {
		o.Lines = append(o.Lines, Line{OfferID: l.Offer.ID, Description: l.Offer.Description, Quantity: l.Quantity, UnitAmount: l.Offer.Amount})
		desc = append(desc, fmt.Sprintf("%d x %s", l.Quantity, l.Offer.Description))
		o.Sale = o.Sale && l.Offer.Sale
	}
	o.Description = strings.Join(desc, "; ")
	if len(o.Description) > setproto.MaxDescriptionLen {
		o.Description = strings.ToValidUTF8(o.Description[:setproto.MaxDescriptionLen-3], "") + "..."
	}
	o.Initiation, err = setproto.SignInitiation(ctx, s.cfg.Sign, setproto.Initiation{
		Endpoint: s.cfg.Endpoint, ServerName: s.cfg.ServerName, MerchantID: s.cfg.MerchantID, Brands: s.cfg.Brands,
		Amount: o.Amount, Currency: o.Currency, Description: o.Description, OfferID: o.Ref, OrderRef: o.Ref,
		IssuedAt: o.CreatedAt, ExpiresAt: o.ExpiresAt,
	})
	if err != nil {
		return nil, err
	}
	if err := s.book.put(ctx, o); err != nil {
		return nil, err
	}
	return o, nil
}

type orderData struct {
	Order      *Order
	State      string // a store order state, or "" while nobody paid
	Attempts   int
	WalletLink string
	Expired    bool
	Payable    bool // nobody paid yet, or the last attempt was declined: the initiation is offered
}

func (s *Shop) loadOrder(w http.ResponseWriter, r *http.Request) *Order {
	o, err := s.book.Get(r.Context(), r.PathValue("ref"))
	if errors.Is(err, errNoOrder) {
		s.fail(w, r, http.StatusNotFound, "There is no order with this reference.")
		return nil
	}
	if err != nil {
		s.internal(w, r, "order", err)
		return nil
	}
	return o
}

func (s *Shop) order(w http.ResponseWriter, r *http.Request) {
	o := s.loadOrder(w, r)
	if o == nil {
		return
	}
	ps, err := s.book.purchases(r.Context(), o.Ref)
	if err != nil {
		s.internal(w, r, "order state", err)
		return
	}
	d := orderData{Order: o, Attempts: len(ps), WalletLink: setproto.InitiationLink(s.cfg.WalletURL, o.Initiation),
		Expired: !s.cfg.Clock().Before(o.ExpiresAt)}
	if len(ps) > 0 {
		d.State = string(ps[0].State)
	}
	retry := d.State == string(merchant.StateDeclined) || d.State == string(merchant.StateRefused)
	d.Payable = (d.State == "" || retry) && !d.Expired
	// The page reloads itself (no script) while the state can still change.
	refresh := 0
	switch {
	case d.State == "" || d.State == string(merchant.StatePending) || retry:
		if d.Payable || d.State == string(merchant.StatePending) {
			refresh = 3 // a wallet may be paying now
		}
	case !final(d.State):
		refresh = 15 // authorized or captured: the operator may still capture or refund
	}
	s.render(w, r, http.StatusOK, "order", page{Title: "Order " + o.Ref, Refresh: refresh, Data: d})
}

func (s *Shop) initiation(w http.ResponseWriter, r *http.Request) {
	o := s.loadOrder(w, r)
	if o == nil {
		return
	}
	h := w.Header()
	h.Set("Content-Type", setproto.InitiationMIMEType)
	h.Set("Content-Disposition", `attachment; filename="`+o.Ref+setproto.InitiationExt+`"`)
	h.Set("Content-Length", strconv.Itoa(len(o.Initiation)))
	_, _ = w.Write(o.Initiation)
}

// money formats minor units: 2500 EUR is "25.00 EUR".
func money(amount int64, currency string) string {
	sign := ""
	if amount < 0 {
		sign, amount = "-", -amount
	}
	return fmt.Sprintf("%s%d.%02d %s", sign, amount/100, amount%100, currency)
}

var stateLabels = map[string]string{
	"":                             "Awaiting payment",
	string(merchant.StatePending):  "Pending: the payment gateway is being asked",
	string(store.OrderAuthorized):  "Authorized",
	string(merchant.StateDeclined): "Declined by the card issuer",
	string(merchant.StateRefused):  "Refused by the payment gateway",
	string(store.OrderCaptured):    "Captured: paid",
	string(store.OrderRefunded):    "Refunded",
	string(merchant.StateReversed): "Cancelled: the authorization was reversed",
	string(store.OrderCancelled):   "Cancelled",
}

func stateLabel(s string) string {
	if l, ok := stateLabels[s]; ok {
		return l
	}
	return s
}

// final: states no operator action changes any more.
func final(s string) bool {
	switch s {
	case string(merchant.StateDeclined), string(merchant.StateRefused), string(store.OrderRefunded),
		string(merchant.StateReversed), string(store.OrderCancelled):
		return true
	}
	return false
}
