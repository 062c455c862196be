package shop

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/setpay/setpay/setproto"
)

// The cart lives in a cookie, MACed with the merchant's token MAC key (the
// challenge key, under its own label) and bound to the browser's session cookie,
// so a browser cannot change prices (they are never in it: only offer IDs and
// quantities) nor hand its cart to another session. The session cookie is random
// and also keys the CSRF token of every form: HMAC(key, "csrf", session). Both
// cookies carry the __Host- prefix: browsers take them only Secure, from this host,
// for path /, so a sibling (sub)domain cannot plant a session whose CSRF token it
// knows (session fixation by cookie tossing).

const (
	sessionCookie = "__Host-setpay_shop_session"
	cartCookie    = "__Host-setpay_shop_cart"
	maxCookie     = 1024
)

// cart maps offer IDs to quantities.
type cart map[string]int

func (c cart) encode() string {
	ids := make([]string, 0, len(c))
	for id := range c {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var parts []string
	for _, id := range ids {
		parts = append(parts, id+":"+strconv.Itoa(c[id]))
	}
	return strings.Join(parts, ",")
}

func decodeCart(s string, offers map[string]bool, maxQty int) (cart, error) {
	c := cart{}
	if s == "" {
		return c, nil
	}
	for _, p := range strings.Split(s, ",") {
		id, q, ok := strings.Cut(p, ":")
		n, err := strconv.Atoi(q)
		if !ok || err != nil || n < 1 || n > maxQty || !offers[id] {
			return nil, errors.New("shop: cart cookie line invalid")
		}
		c[id] = n
	}
	return c, nil
}

func (s *Shop) mac(ctx context.Context, label, session, data string) ([]byte, error) {
	m, err := s.cfg.MACKey.MAC(ctx, []byte("setpay-shop\x00"+label+"\x00"+session+"\x00"+data))
	if err != nil {
		return nil, fmt.Errorf("shop: mac: %w", err)
	}
	return m, nil
}

// session returns the browser's session id, making one (and setting the cookie) when
// it has none.
func (s *Shop) session(w http.ResponseWriter, r *http.Request) (string, error) {
	if c, err := r.Cookie(sessionCookie); err == nil && validSession(c.Value) {
		return c.Value, nil
	}
	id, err := setproto.NewID()
	if err != nil {
		return "", err
	}
	http.SetCookie(w, s.cookie(sessionCookie, id))
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: id}) // later reads in this request see it
	return id, nil
}

func validSession(v string) bool {
	b, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil && len(b) == 16
}

func (s *Shop) cookie(name, value string) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode}
}

// csrfToken is the token the forms of session carry.
func (s *Shop) csrfToken(ctx context.Context, session string) (string, error) {
	m, err := s.mac(ctx, "csrf", session, "")
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(m), nil
}

// checkCSRF compares the form's token with the session's.
func (s *Shop) checkCSRF(ctx context.Context, r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	if err != nil || !validSession(c.Value) {
		return false
	}
	want, err := s.csrfToken(ctx, c.Value)
	if err != nil {
		return false
	}
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// readCart returns the session's cart; a missing, foreign or altered cookie is an
// empty cart.
func (s *Shop) readCart(ctx context.Context, r *http.Request, session string) cart {
	c, err := r.Cookie(cartCookie)
	if err != nil || len(c.Value) > maxCookie {
		return cart{}
	}
	body, sig, ok := strings.Cut(c.Value, ".")
	if !ok {
		return cart{}
	}
	raw, err1 := base64.RawURLEncoding.DecodeString(body)
	got, err2 := base64.RawURLEncoding.DecodeString(sig)
	if err1 != nil || err2 != nil {
		return cart{}
	}
	want, err := s.mac(ctx, "cart", session, string(raw))
	if err != nil || subtle.ConstantTimeCompare(got, want) != 1 {
		return cart{}
	}
	out, err := decodeCart(string(raw), s.offerIDs, s.cfg.MaxQuantity)
	if err != nil {
		return cart{}
	}
	return out
}

func (s *Shop) writeCart(ctx context.Context, w http.ResponseWriter, session string, c cart) error {
	if len(c) == 0 {
		ck := s.cookie(cartCookie, "")
		ck.MaxAge = -1
		http.SetCookie(w, ck)
		return nil
	}
	raw := c.encode()
	m, err := s.mac(ctx, "cart", session, raw)
	if err != nil {
		return err
	}
	http.SetCookie(w, s.cookie(cartCookie, base64.RawURLEncoding.EncodeToString([]byte(raw))+"."+base64.RawURLEncoding.EncodeToString(m)))
	return nil
}
