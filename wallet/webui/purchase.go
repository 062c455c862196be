package webui

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/wallet"
)

// trustSet is the trust of the cards of one root: the verifier over the UI's
// CRLs, the cards' chain (CCA, brand) and a certificate cache shared by every
// purchase.
type trustSet struct {
	root  *x509.Certificate
	trust *setproto.Trust
}

func (s *Server) trustFor(c *card) (*trustSet, error) {
	fp := c.rootFP()
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.trusts[fp]; ok {
		return t, nil
	}
	v, err := pki.NewVerifier(c.Root, s.crls)
	if err != nil {
		return nil, err
	}
	t := &trustSet{root: c.Root, trust: &setproto.Trust{Verifier: v, Intermediates: c.Chain, Cache: pki.NewCertCache(256)}}
	s.trusts[fp] = t
	return t, nil
}

// refreshCRLs fetches the current CRLs; the verifier checks each CRL's signature
// when it uses it. A source that fails is logged: verification then refuses what
// has no current CRL.
func (s *Server) refreshCRLs(ctx context.Context) {
	for _, f := range s.cfg.CRLs {
		crls, err := f.FetchCRLs(ctx)
		for _, c := range crls {
			if perr := s.crls.Put(c); perr != nil {
				s.cfg.Logger.WarnContext(ctx, "CRL not taken", "source", f.String(), "err", perr)
			}
		}
		if err != nil {
			s.cfg.Logger.WarnContext(ctx, "CRLs not fetched", "source", f.String(), "err", err)
		}
	}
}

func (s *Server) rpcContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), rpcTimeout)
}

// initiator is the UI's one initiator per merchant endpoint and root: it
// remembers the certificates it verified, so later purchases get them by
// reference.
func (s *Server) initiator(ctx context.Context, t *trustSet, endpoint, serverName string) (*wallet.Initiator, setpb.MerchantClient, error) {
	mc, err := s.cfg.Merchants(ctx, endpoint, serverName)
	if err != nil {
		return nil, nil, err
	}
	fp := sha256.Sum256(t.root.Raw)
	key := fmt.Sprintf("%x|%s|%s", fp, endpoint, serverName)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.inits[key]; ok {
		return i, mc, nil
	}
	i, err := wallet.NewInitiator(wallet.InitiatorConfig{Trust: t.trust, Merchant: mc, Brand: s.cfg.Brand})
	if err != nil {
		return nil, nil, err
	}
	s.inits[key] = i
	return i, mc, nil
}

// pending is a verified initiation and the merchant's verified offer, waiting for
// the cardholder's confirmation.
type pending struct {
	ID       string
	In       *setproto.VerifiedInitiation
	Offer    *wallet.Offer
	Trust    *trustSet
	Merchant setpb.MerchantClient
	Cards    []card
	Created  time.Time
	// pay is held by the one POST /pay working on this payment: a second one (a
	// double click, another tab) waits, then finds it paid or the request prepared.
	pay sync.Mutex
	// After a first attempt the prepared request is kept: trying again sends the
	// same request (the merchant answers a retry with the same answer).
	w    *wallet.Wallet
	sess *wallet.Session
	req  *setpb.PurchaseRequest
	card string
}

// party describes a verified certificate for the confirmation page.
type party struct {
	ID, Subject, Issuer, Brand string
	NotBefore, NotAfter        time.Time
	Serial                     string
}

func describe(c *x509.Certificate, chain []*x509.Certificate) party {
	p := party{Subject: c.Subject.String(), Issuer: c.Issuer.CommonName, NotBefore: c.NotBefore, NotAfter: c.NotAfter, Serial: c.SerialNumber.Text(16)}
	if _, id, err := pki.EntityID(c); err == nil {
		p.ID = id
	}
	for _, ca := range chain {
		if r, err := pki.RoleOf(ca); err == nil && r == pki.RoleBrand {
			p.Brand = ca.Subject.CommonName
		}
	}
	return p
}

// Merchant is the merchant as verified from the initiation's chain.
func (p *pending) MerchantParty() party { return describe(p.In.Merchant, p.In.Chain) }

// GatewayParty is the gateway whose key-exchange certificate the merchant's signed
// offer names: it alone will read the card data.
func (p *pending) GatewayParty() party {
	return describe(p.Offer.GatewayKX, append([]*x509.Certificate{p.Offer.Merchant}, p.Offer.MerchantChain...))
}

// readInitiation takes the initiation from the link's query parameter (GET) or
// the uploaded .setpay file (POST, multipart field "initiation").
func readInitiation(r *http.Request) ([]byte, error) {
	if r.Method == http.MethodGet {
		q := r.URL.Query().Get("initiation")
		if q == "" {
			return nil, nil
		}
		return setproto.DecodeInitiationParam(q)
	}
	f, _, err := r.FormFile("initiation")
	if err != nil {
		return nil, errors.New("no file: choose the .setpay file the shop gave you")
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxUpload+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxUpload {
		return nil, errors.New("the file is larger than any payment initiation")
	}
	return b, nil
}

func (s *Server) handleReceive(w http.ResponseWriter, r *http.Request, sess *session) {
	data, err := readInitiation(r)
	if err != nil {
		s.refuse(w, r, sess, "initiation", err)
		return
	}
	if data == nil {
		s.render(w, r, sess, http.StatusOK, "receive", page{Title: "Pay a shop"})
		return
	}
	cs, err := s.cards()
	if err != nil {
		s.internal(w, r, sess, err)
		return
	}
	if len(cs) == 0 {
		s.fail(w, r, sess, http.StatusConflict, page{Title: "No card yet", Message: "This wallet holds no card to pay with. Register a card first, then open the shop's payment link again.", Back: "/register"})
		return
	}
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	s.refreshCRLs(ctx)
	// Verify with each root the cards have; the cards of the root that verifies pay.
	var in *setproto.VerifiedInitiation
	var ts *trustSet
	var firstErr error
	seen := map[[32]byte]bool{}
	for i := range cs {
		if seen[cs[i].rootFP()] {
			continue
		}
		seen[cs[i].rootFP()] = true
		t, err := s.trustFor(&cs[i])
		if err != nil {
			s.internal(w, r, sess, err)
			return
		}
		v, err := setproto.VerifyInitiation(ctx, data, t.trust, s.cfg.Clock())
		if err == nil {
			in, ts = v, t
			break
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if in == nil {
		s.refuse(w, r, sess, "initiation", firstErr)
		return
	}
	if !slices.Contains(in.Brands, s.cfg.Brand) {
		s.fail(w, r, sess, http.StatusUnprocessableEntity, page{Title: "Card brand not accepted",
			Message: fmt.Sprintf("This merchant accepts %s; this wallet's cards are %s. Nothing was paid.", strings.Join(in.Brands, ", "), s.cfg.Brand)})
		return
	}
	ini, mc, err := s.initiator(ctx, ts, in.Endpoint, in.ServerName)
	if err != nil {
		s.refuse(w, r, sess, "connect", fmt.Errorf("merchant %s: %w", in.Endpoint, err))
		return
	}
	offer, err := ini.Initiate(ctx, in.OfferID)
	if err != nil {
		s.refuse(w, r, sess, "offer", &endpointError{in.Endpoint, err})
		return
	}
	res := offer.Res
	// The merchant's signed offer must be what the initiation promised.
	switch {
	case res.GetMerchantId() != in.MerchantID:
		s.refuse(w, r, sess, "offer", setproto.Errorf(setpb.Reason_MERCHANT_MISMATCH, "the offer is signed by merchant %q, the initiation by %q", res.GetMerchantId(), in.MerchantID))
		return
	case res.GetAmount() != in.Amount || res.GetCurrency() != in.Currency:
		s.refuse(w, r, sess, "offer", setproto.Errorf(setpb.Reason_AMOUNT_MISMATCH, "the merchant now asks %s, the initiation said %s",
			money(res.GetAmount(), res.GetCurrency()), money(in.Amount, in.Currency)))
		return
	case res.GetOrderDescription() != in.Description:
		s.refuse(w, r, sess, "offer", setproto.Errorf(setpb.Reason_HASH_MISMATCH, "the merchant's order description differs from the initiation's"))
		return
	}
	var payWith []card
	for _, c := range cs {
		if c.rootFP() == sha256.Sum256(ts.root.Raw) {
			payWith = append(payWith, c)
		}
	}
	id, err := randomToken()
	if err != nil {
		s.internal(w, r, sess, err)
		return
	}
	p := &pending{ID: id, In: in, Offer: offer, Trust: ts, Merchant: mc, Cards: payWith, Created: s.cfg.Clock()}
	s.mu.Lock()
	if len(sess.pending) >= maxPending {
		var oldest string
		for k, v := range sess.pending {
			if oldest == "" || v.Created.Before(sess.pending[oldest].Created) {
				oldest = k
			}
		}
		delete(sess.pending, oldest)
	}
	sess.pending[id] = p
	s.mu.Unlock()
	s.cfg.Logger.InfoContext(r.Context(), "payment initiation verified", "merchant", in.MerchantID, "offer", in.OfferID, "xid", res.GetXid(),
		"amount", res.GetAmount(), "currency", res.GetCurrency(), "gateway", offer.GatewayID)
	s.render(w, r, sess, http.StatusOK, "confirm", page{Title: "Confirm the payment", Data: p})
}

// endpointError names the merchant endpoint of a failed call.
type endpointError struct {
	endpoint string
	err      error
}

func (e *endpointError) Error() string { return "merchant " + e.endpoint + ": " + e.err.Error() }
func (e *endpointError) Unwrap() error { return e.err }

func (s *Server) pendingOf(sess *session, id string) *pending {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sess.pending[id]
}

func (s *Server) handlePay(w http.ResponseWriter, r *http.Request, sess *session) {
	p := s.pendingOf(sess, r.PostFormValue("pending"))
	if p == nil {
		s.fail(w, r, sess, http.StatusGone, page{Title: "No such payment", Message: "This payment is not waiting for confirmation any more (already paid, or the wallet restarted). Open the shop's payment link again."})
		return
	}
	p.pay.Lock()
	defer p.pay.Unlock()
	if s.pendingOf(sess, p.ID) != p {
		s.fail(w, r, sess, http.StatusGone, page{Title: "No such payment", Message: "This payment is not waiting for confirmation any more (already paid, or the wallet restarted). Open the shop's payment link again."})
		return
	}
	again := func(status int, msg string) {
		s.render(w, r, sess, status, "confirm", page{Title: "Confirm the payment", Message: msg, Data: p})
	}
	now := s.cfg.Clock()
	if !now.Before(p.In.ExpiresAt) {
		s.drop(sess, p.ID)
		s.refuse(w, r, sess, "initiation", setproto.Errorf(setpb.Reason_INITIATION_EXPIRED, "the initiation expired at %s", p.In.ExpiresAt.Format(time.RFC3339)))
		return
	}
	var c *card
	for i := range p.Cards {
		if p.Cards[i].ID == r.PostFormValue("card") {
			c = &p.Cards[i]
		}
	}
	if c == nil {
		again(http.StatusUnprocessableEntity, "Card: choose one of the cards listed.")
		return
	}
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	if p.req == nil || p.card != c.ID {
		id, err := wallet.Load(ctx, c.Dir, []byte(r.PostFormValue("passphrase")), wallet.LoadOptions{Find: s.cfg.FindKey, Logger: s.cfg.Logger})
		if err != nil {
			if errors.Is(err, wallet.ErrWrongPassphrase) {
				again(http.StatusForbidden, "Passphrase: wrong passphrase for card "+c.Label()+". Nothing was paid; enter it again.")
				return
			}
			again(http.StatusUnprocessableEntity, "The card could not be unlocked: "+err.Error())
			return
		}
		// The trust that verified merchant and gateway must be the root the card is
		// bound to (Load checked root.pem against the sealed card file).
		if sha256.Sum256(id.Root.Raw) != sha256.Sum256(p.Trust.root.Raw) {
			again(http.StatusConflict, "The card's trusted root changed since the initiation was verified. Open the shop's link again.")
			return
		}
		wl, err := wallet.New(wallet.Config{Identity: *id, Trust: p.Trust.trust, Merchant: p.Merchant, Brand: s.cfg.Brand, Logger: s.cfg.Logger})
		if err != nil {
			s.internal(w, r, sess, err)
			return
		}
		ws, err := wl.Session(p.Offer)
		if err != nil {
			s.refuse(w, r, sess, "purchase", err)
			return
		}
		req, err := wl.Prepare(ws)
		if err != nil {
			s.internal(w, r, sess, err)
			return
		}
		s.mu.Lock()
		p.w, p.sess, p.req, p.card = wl, ws, req, c.ID
		s.mu.Unlock()
	}
	s.refreshCRLs(ctx)
	rc, err := p.w.Send(ctx, p.sess, p.req)
	if err != nil {
		if unreachable(err) || setproto.ReasonOf(err) == setpb.Reason_GATEWAY_UNAVAILABLE {
			// Kept: the confirmation again, whose Pay button sends the same request.
			_, msg, code := explain("purchase", err)
			s.cfg.Logger.InfoContext(r.Context(), "purchase not answered", "xid", p.Offer.Res.GetXid(), "err", err)
			again(code, msg)
			return
		}
		s.drop(sess, p.ID)
		s.refuse(w, r, sess, "purchase", &endpointError{p.In.Endpoint, err})
		return
	}
	s.drop(sess, p.ID)
	e := entry{XID: rc.XID, Time: now, Merchant: rc.Merchant, Endpoint: p.In.Endpoint, ServerName: p.In.ServerName,
		Gateway: rc.Gateway, Description: p.In.Description, OfferID: p.In.OfferID, OrderRef: p.In.OrderRef,
		Amount: p.Offer.Res.GetAmount(), Currency: p.Offer.Res.GetCurrency(), Card: c.ID, Masked: p.w.MaskedPAN(),
		Result: rc.Result.String(), Approved: rc.Approved(), AuthCode: rc.AuthCode, Captured: rc.Captured}
	if err := s.hist.add(e); err != nil {
		s.cfg.Logger.ErrorContext(r.Context(), "history not written", "xid", rc.XID, "err", err)
	}
	s.cfg.Logger.InfoContext(r.Context(), "purchase", "xid", rc.XID, "merchant", rc.Merchant, "result", rc.Result.String(), "card", e.Masked)
	s.render(w, r, sess, http.StatusOK, "result", page{Title: "Payment result", Data: struct {
		Entry    entry
		Merchant party
		Gateway  party
	}{e, p.MerchantParty(), p.GatewayParty()}})
}

func (s *Server) drop(sess *session, id string) {
	s.mu.Lock()
	delete(sess.pending, id)
	s.mu.Unlock()
}
