// Package merchant is the SET merchant: it starts purchases with a signed offer, checks
// the cardholder's dual signature over the order without ever seeing the card, asks the
// payment gateway for authorization (signing with its token key and forwarding the
// cardholder's PI envelope unopened) and answers the wallet, signed.
package merchant

import (
	"context"
	"crypto"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
)

// Order states beyond the store's common ones.
const (
	StatePending  store.OrderState = "pending"  // the purchase request was accepted; the gateway is being asked
	StateDeclined store.OrderState = "declined" // the issuer declined
	StateRefused  store.OrderState = "refused"  // the gateway refused the request as invalid
)

// Offer is something the shopping phase agreed on: what the PInitRes states, signed.
type Offer struct {
	ID          string `yaml:"id"`
	Description string `yaml:"description"`
	Amount      int64  `yaml:"amount"` // minor units
	Currency    string `yaml:"currency"`
	Sale        bool   `yaml:"sale"` // authorize and capture at once
}

// DefaultInitValidity is how long a purchase initiation may be answered by a
// purchase request.
const DefaultInitValidity = time.Hour

// Config configures a Merchant.
type Config struct {
	Sign   setproto.Party    // the merchant's signature key (token) and certificate
	KXCert *x509.Certificate // the merchant's key-exchange certificate
	KXKey  crypto.Decrypter  // its token key
	Trust  *setproto.Trust
	Store  store.DB
	Brand  string
	// GatewayKX is the gateway's key-exchange certificate and GatewayChain its PCA and
	// brand: the merchant hands them to wallets and envelopes to the gateway.
	GatewayKX    *x509.Certificate
	GatewayChain []*x509.Certificate
	Gateway      setpb.GatewayClient
	Offers       []Offer
	// OfferBook, if set, is asked for the offers not in Offers: the storefront
	// registers each checkout as an offer of its own (its order reference as the
	// offer ID, the cart's total as the amount).
	OfferBook OfferBook
	// ChallengeKey derives the merchant's challenges and its authorization pair IDs
	// from the XID, so they need no storage: a MAC key in the merchant's token
	// (*hsm.SecretKey). It is required, and it must outlive the process: a purchase
	// initiated before a restart is completed after it, and replicas that share the
	// key (the same token key) accept each other's initiations.
	ChallengeKey MACKey
	// InitValidity is how long after the initiation a purchase request for its XID
	// is accepted; 0: DefaultInitValidity.
	InitValidity time.Duration
	Envelope     setproto.EnvelopeOptions
	Clock        func() time.Time
	Logger       *slog.Logger
}

// OfferBook looks up offers made after start (a storefront's checkouts). Offer
// answers ok=false for an unknown id; an error is the book's own failure.
type OfferBook interface {
	Offer(ctx context.Context, id string) (o Offer, ok bool, err error)
}

// offer finds id among the configured offers, then in the offer book.
func (m *Merchant) offer(ctx context.Context, id string) (Offer, bool, error) {
	if o, ok := m.offers[id]; ok {
		return o, true, nil
	}
	if m.cfg.OfferBook == nil {
		return Offer{}, false, nil
	}
	o, ok, err := m.cfg.OfferBook.Offer(ctx, id)
	if err != nil {
		return Offer{}, false, setproto.Wrap(setpb.Reason_INTERNAL, err, "offer book")
	}
	if ok && (o.ID != id || o.Amount <= 0 || o.Amount > setproto.MaxAmount || len(o.Currency) != 3 || len(o.Description) > setproto.MaxDescriptionLen) {
		return Offer{}, false, setproto.Errorf(setpb.Reason_INTERNAL, "offer book: offer %q is invalid", id)
	}
	return o, ok, nil
}

// MACKey computes HMAC-SHA256 under a key it never reveals; *hsm.SecretKey (a
// CKK_GENERIC_SECRET key made by `setpay hsm keygen --alg hmac-sha256 --usage mac`)
// is one.
type MACKey interface {
	MAC(ctx context.Context, data []byte) ([]byte, error)
}

// Merchant serves setpb.MerchantServer.
type Merchant struct {
	setpb.UnimplementedMerchantServer
	cfg       Config
	id        string
	gatewayID string
	offers    map[string]Offer
	// gatewayHasCerts: once the gateway has answered, it caches our certificates and
	// later requests name them by thumbprint.
	gatewayHasCerts atomic.Bool
}

// New checks cfg and returns the merchant.
func New(ctx context.Context, cfg Config) (*Merchant, error) {
	switch {
	case cfg.Sign.Key == nil || cfg.Sign.Cert == nil || cfg.KXCert == nil || cfg.KXKey == nil:
		return nil, errors.New("merchant: signature and key-exchange keys and certificates are required")
	case cfg.Trust == nil || cfg.Store == nil || cfg.Gateway == nil || cfg.GatewayKX == nil:
		return nil, errors.New("merchant: trust, store, gateway client and gateway certificate are required")
	case cfg.Brand == "":
		return nil, errors.New("merchant: brand is required")
	case cfg.ChallengeKey == nil:
		return nil, errors.New("merchant: a challenge key is required (a MAC key in the merchant's token)")
	}
	r, id, err := pki.EntityID(cfg.Sign.Cert)
	if err != nil || r != pki.RoleMerchant {
		return nil, fmt.Errorf("merchant: signature certificate is not a merchant's: %v", err)
	}
	if r2, id2, err := pki.EntityID(cfg.KXCert); err != nil || r2 != pki.RoleMerchant || id2 != id {
		return nil, fmt.Errorf("merchant: key-exchange certificate is not merchant %q's", id)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.InitValidity == 0 {
		cfg.InitValidity = DefaultInitValidity
	}
	// The merchant checks the gateway certificate it hands out the way wallets will.
	gkx, gid, err := cfg.Trust.VerifyKeyExchange(ctx, thumb(cfg.GatewayKX), append([]*x509.Certificate{cfg.GatewayKX}, cfg.GatewayChain...), pki.RoleGateway)
	if err != nil {
		return nil, fmt.Errorf("merchant: gateway key-exchange certificate: %w", err)
	}
	cfg.GatewayKX = gkx
	m := &Merchant{cfg: cfg, id: id, gatewayID: gid, offers: map[string]Offer{}}
	for _, o := range cfg.Offers {
		if err := pki.ValidateEntityID(o.ID); err != nil {
			return nil, fmt.Errorf("merchant: offer id: %w", err)
		}
		if o.Amount <= 0 || o.Amount > setproto.MaxAmount || len(o.Currency) != 3 || len(o.Description) > setproto.MaxDescriptionLen {
			return nil, fmt.Errorf("merchant: offer %q: amount, currency or description invalid", o.ID)
		}
		m.offers[o.ID] = o
	}
	return m, nil
}

// ID is the merchant id.
func (m *Merchant) ID() string { return m.id }

// Register adds the service to a gRPC server.
func (m *Merchant) Register(s grpc.ServiceRegistrar) { setpb.RegisterMerchantServer(s, m) }

func thumb(c *x509.Certificate) []byte {
	tp := pki.ThumbprintOf(c)
	return tp[:]
}

// deriveContext separates the merchant's derivations from any other MAC made with the
// same key.
const deriveContext = "setpay merchant v1\x00"

// derive is HMAC-SHA256(ChallengeKey, context || label || 0 || xid), computed in the
// token: the merchant's challenges and pair IDs toward the gateway are recomputed,
// not stored, and are the same on a retry, after a restart and on every replica
// holding the same key.
func (m *Merchant) derive(ctx context.Context, label, xid string) ([]byte, error) {
	mac, err := m.cfg.ChallengeKey.MAC(ctx, []byte(deriveContext+label+"\x00"+xid))
	if err != nil {
		return nil, fmt.Errorf("merchant: challenge key: %w", err)
	}
	if len(mac) < 32 {
		return nil, fmt.Errorf("merchant: challenge key: MAC of %d bytes, want 32", len(mac))
	}
	return mac, nil
}

func (m *Merchant) fail(op string, err error) error {
	m.cfg.Logger.Warn(op+" refused", "result", "REFUSED", "reason", setproto.ReasonOf(err).String(), "err", err)
	return setproto.Status(err)
}

// challM is the merchant challenge of an XID issued for an offer.
func (m *Merchant) challM(ctx context.Context, xid, offerID string) ([]byte, error) {
	c, err := m.derive(ctx, "chall-m", xid+"\x00"+offerID)
	if err != nil {
		return nil, err
	}
	return c[:32], nil
}

// newXID is a transaction ID: the issue time (Unix seconds, 8 bytes big-endian)
// and 128 random bits, base64url.
func newXID(at time.Time) (string, error) {
	r, err := setproto.Random(16)
	if err != nil {
		return "", err
	}
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 24), uint64(at.Unix()))
	return base64.RawURLEncoding.EncodeToString(append(b, r...)), nil
}

// xidIssued reads the issue time back from an XID made by newXID.
func xidIssued(xid string) (time.Time, bool) {
	b, err := base64.RawURLEncoding.DecodeString(xid)
	if err != nil || len(b) != 24 {
		return time.Time{}, false
	}
	return time.Unix(int64(binary.BigEndian.Uint64(b[:8])), 0), true
}

// PurchaseInit implements setpb.MerchantServer.
func (m *Merchant) PurchaseInit(ctx context.Context, in *setpb.PInitReq) (*setpb.Signed, error) {
	out, err := m.purchaseInit(ctx, in)
	if err != nil {
		return nil, m.fail("purchase initiation", err)
	}
	return out, nil
}

func (m *Merchant) purchaseInit(ctx context.Context, in *setpb.PInitReq) (*setpb.Signed, error) {
	if in == nil {
		return nil, setproto.Errorf(setpb.Reason_MALFORMED, "empty request")
	}
	if err := setproto.ValidatePInitReq(in); err != nil {
		return nil, err
	}
	if in.GetBrand() != m.cfg.Brand {
		return nil, setproto.Errorf(setpb.Reason_UNSUPPORTED, "brand %q not accepted", in.GetBrand())
	}
	offer, ok, err := m.offer(ctx, in.GetOfferId())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, setproto.Errorf(setpb.Reason_UNSUPPORTED, "no offer %q", in.GetOfferId())
	}
	now := m.cfg.Clock()
	// Nothing is stored: anyone may initiate, so initiation must not be able to fill
	// the store. The XID carries its issue time and chall_m = HMAC(challenge key, XID, offer) lets
	// the purchase request, dual-signed by a certified cardholder, prove both; the
	// order row is created by that request.
	xid, err := newXID(now)
	if err != nil {
		return nil, err
	}
	challM, err := m.challM(ctx, xid, offer.ID)
	if err != nil {
		return nil, err
	}
	res := &setpb.PInitRes{
		Xid: xid, Rrpid: in.GetRrpid(), ChallEc: in.GetChallEc(), ChallM: challM,
		MerchantId: m.id, Brand: m.cfg.Brand, GatewayId: m.gatewayID, GatewayKxThumbprint: thumb(m.cfg.GatewayKX),
		OrderDescription: offer.Description, Amount: offer.Amount, Currency: offer.Currency, Sale: offer.Sale,
	}
	// Certificates the wallet says it holds are named by thumbprint, not sent again.
	known := map[pki.Thumbprint]bool{}
	for _, tp := range in.GetKnownThumbprints() {
		known[pki.Thumbprint(tp)] = true
	}
	var embed []*x509.Certificate
	var refs [][]byte
	seen := map[pki.Thumbprint]bool{}
	for _, c := range append(append(m.cfg.Sign.Certificates(), m.cfg.GatewayKX), m.cfg.GatewayChain...) {
		tp := pki.ThumbprintOf(c)
		if seen[tp] {
			continue
		}
		seen[tp] = true
		if known[tp] {
			refs = append(refs, tp[:])
		} else {
			embed = append(embed, c)
		}
	}
	der, err := setproto.SignMessage(setpb.ContentKind_PINIT_RES, res, m.cfg.Sign, now, embed)
	if err != nil {
		return nil, err
	}
	m.cfg.Logger.Info("purchase initiated", "xid", xid, "offer", offer.ID, "amount", offer.Amount, "currency", offer.Currency)
	return &setpb.Signed{Cms: der, CertRefs: refs}, nil
}

// Purchase implements setpb.MerchantServer.
func (m *Merchant) Purchase(ctx context.Context, in *setpb.PurchaseRequest) (*setpb.Signed, error) {
	out, err := m.purchase(ctx, in)
	if err != nil {
		return nil, m.fail("purchase", err)
	}
	return out, nil
}

func (m *Merchant) purchase(ctx context.Context, in *setpb.PurchaseRequest) (*setpb.Signed, error) {
	if in == nil {
		return nil, setproto.Errorf(setpb.Reason_MALFORMED, "empty request")
	}
	if err := setproto.ValidatePurchaseRequest(in); err != nil {
		return nil, err
	}
	oi, err := setproto.ParseOrderInfo(in.GetOrderInfo())
	if err != nil {
		return nil, err
	}
	if oi.GetMerchantId() != m.id {
		return nil, setproto.Errorf(setpb.Reason_MERCHANT_MISMATCH, "the OI is for merchant %q", oi.GetMerchantId())
	}
	if oi.GetBrand() != m.cfg.Brand {
		return nil, setproto.Errorf(setpb.Reason_UNSUPPORTED, "brand %q not accepted", oi.GetBrand())
	}
	oiHash := setproto.Hash(in.GetOrderInfo())
	// The merchant checks the dual signature with H(PI) as given: it cannot read the PI,
	// the gateway recomputes H(PI) from the PI itself.
	dual, err := m.cfg.Trust.VerifyDual(ctx, in.GetDualSignature(), in.GetPiHash(), oiHash)
	if err != nil {
		return nil, err
	}
	offer, ok, err := m.offer(ctx, oi.GetOfferId())
	if err != nil {
		return nil, err
	}
	issued, fromUs := xidIssued(oi.GetXid())
	now := m.cfg.Clock()
	challM, err := m.challM(ctx, oi.GetXid(), oi.GetOfferId())
	if err != nil {
		return nil, err
	}
	switch {
	case subtle.ConstantTimeCompare(oi.GetChallM(), challM) != 1 || !fromUs:
		return nil, setproto.Errorf(setpb.Reason_CHALLENGE_MISMATCH, "the OI does not carry the challenge of %s", oi.GetXid())
	case now.Sub(issued) > m.cfg.InitValidity || issued.Sub(now) > time.Minute:
		return nil, setproto.Errorf(setpb.Reason_UNKNOWN_TRANSACTION, "purchase %s was initiated too long ago; start again", oi.GetXid())
	case !ok:
		return nil, setproto.Errorf(setpb.Reason_UNSUPPORTED, "offer %q is no longer offered", oi.GetOfferId())
	case subtle.ConstantTimeCompare(oi.GetOdHash(), setproto.Hash([]byte(offer.Description))) != 1:
		return nil, setproto.Errorf(setpb.Reason_HASH_MISMATCH, "H(OD) differs from the offer's")
	case oi.GetAmount() != offer.Amount || oi.GetCurrency() != offer.Currency:
		return nil, setproto.Errorf(setpb.Reason_AMOUNT_MISMATCH, "the OI says %d %s, the offer %d %s", oi.GetAmount(), oi.GetCurrency(), offer.Amount, offer.Currency)
	case oi.GetGatewayId() != m.gatewayID || subtle.ConstantTimeCompare(oi.GetGatewayKxThumbprint(), thumb(m.cfg.GatewayKX)) != 1:
		// The cardholder named, under its dual signature, the gateway this merchant
		// offered; the PI names the same one and the gateway checks it is itself.
		return nil, setproto.Errorf(setpb.Reason_GATEWAY_MISMATCH, "the OI names gateway %q, this merchant works with %q", oi.GetGatewayId(), m.gatewayID)
	}
	// The PI envelope must be for the gateway alone: one that the merchant (or anyone
	// else) could open too would put the card in the merchant's hands.
	if err := setproto.CheckSoleRecipient(in.GetPiEnvelope(), setpb.ContentKind_PAYMENT_INSTRUCTIONS, m.cfg.GatewayKX); err != nil {
		return nil, err
	}
	wire, err := setproto.Marshal(in)
	if err != nil {
		return nil, err
	}
	reqHash := setproto.Hash(wire)
	cardholder := pki.ThumbprintOf(dual.Signer)
	// Claim the XID for exactly this request, creating its order: a retry (same bytes)
	// passes, any other request for the XID (new pair ID, reused challenges,
	// anything) is a replay.
	_, _, err = m.cfg.Store.Idempotent(ctx, "merchant/purchase-claim", oi.GetXid(), reqHash, func(ctx context.Context, tx store.Tx) ([]byte, error) {
		if err := tx.InsertOrder(ctx, &store.Order{XID: oi.GetXid(), MerchantOrderID: offer.ID + "/" + oi.GetXid(),
			DescriptionHash: oi.GetOdHash(), Amount: offer.Amount, Currency: offer.Currency, State: StatePending,
			CreatedAt: now, Cardholder: cardholder[:]}); err != nil {
			return nil, err
		}
		return []byte{1}, nil
	})
	switch {
	case errors.Is(err, store.ErrConflict): // ErrIDReuse, or the order exists already
		return nil, setproto.Wrap(setpb.Reason_REPLAY, err, "purchase %s was already requested", oi.GetXid())
	case err != nil:
		return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "claim order")
	}
	// A retry of a request already answered gets the stored answer without asking the
	// gateway again; only a request left pending goes (again) to the gateway.
	var order *store.Order
	if err := m.cfg.Store.View(ctx, func(ctx context.Context, tx store.Tx) error {
		order, err = tx.GetOrder(ctx, oi.GetXid())
		return err
	}); err != nil {
		return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "read order")
	}
	var out *AuthOutcome
	var authErr error
	if order.State == StatePending {
		out, authErr = m.Authorize(ctx, AuthInput{
			XID: oi.GetXid(), Amount: oi.GetAmount(), Currency: oi.GetCurrency(), OIHash: oiHash, Sale: offer.Sale,
			PIEnvelope: in.GetPiEnvelope(), DualSignature: in.GetDualSignature(),
		})
		if authErr != nil && setproto.ReasonOf(authErr) == setpb.Reason_GATEWAY_UNAVAILABLE {
			// Nothing decided: the order stays pending and the same request may be retried.
			return nil, authErr
		}
	}
	answer, _, err := m.cfg.Store.Idempotent(ctx, "merchant/purchase", oi.GetXid(), reqHash, func(ctx context.Context, tx store.Tx) ([]byte, error) {
		return m.answer(ctx, tx, oi, out, authErr)
	})
	if err != nil {
		return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "record purchase")
	}
	sa, err := setproto.ParseStoredAnswer(answer)
	if err != nil {
		return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "stored answer")
	}
	if sa.GetError() != nil {
		return nil, setproto.FromDetail(sa.GetError())
	}
	result := string(order.State) // a retry: the order's state as decided before
	if out != nil {
		result = out.Response.GetResult().String()
	}
	m.cfg.Logger.Info("purchase", "xid", oi.GetXid(), "cardholder", dual.EntityID, "result", result, "replayed", out == nil)
	return &setpb.Signed{Cms: sa.GetPurchaseResponse(), CertRefs: m.cfg.Sign.Thumbprints()}, nil
}

// answer moves the order to its final state and returns the stored answer: a signed
// purchase response, or the gateway's refusal.
func (m *Merchant) answer(ctx context.Context, tx store.Tx, oi *setpb.OrderInfo, out *AuthOutcome, authErr error) ([]byte, error) {
	now := m.cfg.Clock()
	if out == nil && authErr == nil {
		// The order left pending without a stored answer for this request: cannot
		// happen, both commit together.
		return nil, errors.New("merchant: order decided but no stored answer")
	}
	if _, err := tx.AppendAudit(ctx, store.AuditRecord{Time: now, Actor: "merchant:" + m.id, KeyURI: setproto.KeyURI(m.cfg.Sign.Key),
		Purpose: "sign authorization request", XID: oi.GetXid()}); err != nil {
		return nil, err
	}
	if authErr != nil {
		if err := tx.SetOrderState(ctx, oi.GetXid(), StatePending, StateRefused, now); err != nil {
			return nil, err
		}
		return setproto.Marshal(&setpb.StoredAnswer{Error: setproto.DetailOf(authErr)})
	}
	r := out.Response
	state := StateDeclined
	switch {
	case r.GetResult() == setpb.AuthResult_APPROVED && r.GetCaptured():
		state = store.OrderCaptured
	case r.GetResult() == setpb.AuthResult_APPROVED:
		state = store.OrderAuthorized
	}
	if err := tx.SetOrderState(ctx, oi.GetXid(), StatePending, state, now); err != nil {
		return nil, err
	}
	if tok := r.GetCaptureToken(); len(tok) > 0 {
		// Kept with the order: a later Capture presents it to the gateway.
		if err := tx.SetOrderCaptureToken(ctx, oi.GetXid(), tok); err != nil {
			return nil, err
		}
	}
	pres := &setpb.PurchaseResponse{
		Xid: oi.GetXid(), Rrpid: oi.GetRrpid(), ChallEc: oi.GetChallEc(), Result: r.GetResult(),
		AuthCode: r.GetAuthCode(), Amount: r.GetAuthorizedAmount(), Currency: oi.GetCurrency(), Captured: r.GetCaptured(),
	}
	der, err := setproto.SignMessage(setpb.ContentKind_PURCHASE_RESPONSE, pres, m.cfg.Sign, now, nil)
	if err != nil {
		return nil, err
	}
	for _, op := range []store.AuditRecord{
		{Purpose: "decrypt authorization response", KeyURI: setproto.KeyURI(m.cfg.KXKey)},
		{Purpose: "sign purchase response", KeyURI: setproto.KeyURI(m.cfg.Sign.Key), Details: r.GetResult().String()},
	} {
		op.Time, op.Actor, op.XID = now, "merchant:"+m.id, oi.GetXid()
		if _, err := tx.AppendAudit(ctx, op); err != nil {
			return nil, err
		}
	}
	return setproto.Marshal(&setpb.StoredAnswer{PurchaseResponse: der})
}

// AuthInput is what the merchant asks the gateway to authorize.
type AuthInput struct {
	XID           string
	Amount        int64
	Currency      string
	OIHash        []byte
	Sale          bool
	PIEnvelope    []byte // the cardholder's, unopened
	DualSignature []byte // the cardholder's
}

// AuthOutcome is the gateway's verified answer.
type AuthOutcome struct {
	Response *setpb.AuthResponse
	Gateway  *x509.Certificate // the gateway's signature certificate
}

// Authorize signs an authorization request with the merchant's token key, envelopes it
// to the gateway's key-exchange certificate and verifies the enveloped, signed answer.
// The request content is a function of in and the XID, so a retry is recognised by the
// gateway as the same request.
func (m *Merchant) Authorize(ctx context.Context, in AuthInput) (*AuthOutcome, error) {
	rrpid, err := m.derive(ctx, "rrpid", in.XID)
	if err != nil {
		return nil, err
	}
	challGW, err := m.derive(ctx, "chall-gw", in.XID)
	if err != nil {
		return nil, err
	}
	req := &setpb.AuthRequest{
		Xid: in.XID, Rrpid: base64.RawURLEncoding.EncodeToString(rrpid[:16]),
		ChallM: challGW[:32], MerchantId: m.id, Amount: in.Amount, Currency: in.Currency,
		OiHash: in.OIHash, Sale: in.Sale, PiEnvelope: in.PIEnvelope, DualSignature: in.DualSignature,
		MerchantKxThumbprint: thumb(m.cfg.KXCert),
	}
	out, err := m.callGateway(ctx, req, !m.gatewayHasCerts.Load())
	if err != nil && setproto.ReasonOf(err) == setpb.Reason_CERT_UNKNOWN && m.gatewayHasCerts.Load() {
		// The gateway lost its cache (a restart): send the certificates again.
		out, err = m.callGateway(ctx, req, true)
	}
	if err != nil {
		return nil, err
	}
	m.gatewayHasCerts.Store(true)
	return out, nil
}

func (m *Merchant) callGateway(ctx context.Context, req *setpb.AuthRequest, embed bool) (*AuthOutcome, error) {
	now := m.cfg.Clock()
	mine := append(m.cfg.Sign.Certificates(), m.cfg.KXCert)
	var certs []*x509.Certificate
	var refs [][]byte
	if embed {
		certs = mine
	} else {
		for _, c := range mine {
			refs = append(refs, thumb(c))
		}
	}
	signed, err := setproto.SignMessage(setpb.ContentKind_AUTH_REQUEST, req, m.cfg.Sign, now, certs)
	if err != nil {
		return nil, err
	}
	sealed, err := setproto.Seal(setpb.ContentKind_AUTH_REQUEST, signed, m.cfg.GatewayKX, m.cfg.Envelope)
	if err != nil {
		return nil, err
	}
	res, err := m.cfg.Gateway.Authorize(ctx, &setpb.Enveloped{Cms: sealed, CertRefs: refs})
	if err != nil {
		r := setproto.ReasonOf(err)
		return nil, &setproto.Error{Reason: r, Msg: "gateway", Err: err}
	}
	v, err := m.openGatewayAnswer(ctx, res, setpb.ContentKind_AUTH_RESPONSE)
	if err != nil {
		return nil, err
	}
	r, err := setproto.ParseAuthResponse(v.Content)
	if err != nil {
		return nil, gatewayFault(err)
	}
	if r.GetXid() != req.GetXid() || r.GetRrpid() != req.GetRrpid() || r.GetMerchantId() != m.id ||
		subtle.ConstantTimeCompare(r.GetChallM(), req.GetChallM()) != 1 {
		return nil, gatewayFault(setproto.Errorf(setpb.Reason_CHALLENGE_MISMATCH, "the gateway's answer is not for this request"))
	}
	if r.GetResult() == setpb.AuthResult_APPROVED && (r.GetAuthorizedAmount() != req.GetAmount() || r.GetCurrency() != req.GetCurrency()) {
		return nil, gatewayFault(setproto.Errorf(setpb.Reason_AMOUNT_MISMATCH, "the gateway authorized another amount"))
	}
	return &AuthOutcome{Response: r, Gateway: v.Signer}, nil
}

// gatewayFault marks a bad answer from the gateway: to the wallet it is the gateway's
// problem, and the same request may be retried.
// openGatewayAnswer opens an answer from the gateway: the envelope with the merchant's
// key-exchange key in its token, then the gateway's signature, chain and role, and
// that it is the gateway this merchant works with. Every gateway answer goes through
// here, so the checks cannot drift apart between message kinds.
func (m *Merchant) openGatewayAnswer(ctx context.Context, env *setpb.Enveloped, kind setpb.ContentKind) (*setproto.Verified, error) {
	inner, err := setproto.Unseal(env.GetCms(), kind, m.cfg.KXCert, m.cfg.KXKey)
	if err != nil {
		return nil, gatewayFault(err)
	}
	v, err := m.cfg.Trust.Open(ctx, inner, env.GetCertRefs(), kind, pki.Expect{Role: pki.RoleGateway, Purpose: pki.PurposeSignature})
	if err != nil {
		return nil, gatewayFault(err)
	}
	if v.EntityID != m.gatewayID {
		return nil, gatewayFault(setproto.Errorf(setpb.Reason_CERT_WRONG_ROLE, "answer signed by gateway %q, not %q", v.EntityID, m.gatewayID))
	}
	return v, nil
}

func gatewayFault(err error) error {
	return &setproto.Error{Reason: setpb.Reason_GATEWAY_UNAVAILABLE, Msg: "invalid answer from the gateway", Err: err}
}

// Inquiry implements setpb.MerchantServer: the cardholder asks for the state of an
// order by XID, signed; the answer is signed.
func (m *Merchant) Inquiry(ctx context.Context, in *setpb.Signed) (*setpb.Signed, error) {
	out, err := m.inquiry(ctx, in)
	if err != nil {
		return nil, m.fail("inquiry", err)
	}
	return out, nil
}

func (m *Merchant) inquiry(ctx context.Context, in *setpb.Signed) (*setpb.Signed, error) {
	if in == nil {
		return nil, setproto.Errorf(setpb.Reason_MALFORMED, "empty request")
	}
	v, err := m.cfg.Trust.Open(ctx, in.GetCms(), in.GetCertRefs(), setpb.ContentKind_INQUIRY_REQUEST, pki.Expect{Role: pki.RoleCardholder, Purpose: pki.PurposeSignature})
	if err != nil {
		return nil, err
	}
	req, err := setproto.ParseInquiryRequest(v.Content)
	if err != nil {
		return nil, err
	}
	var order *store.Order
	if err := m.cfg.Store.View(ctx, func(ctx context.Context, tx store.Tx) error {
		order, err = tx.GetOrder(ctx, req.GetXid())
		return err
	}); errors.Is(err, store.ErrNotFound) {
		return nil, setproto.Errorf(setpb.Reason_UNKNOWN_TRANSACTION, "no purchase %s", req.GetXid())
	} else if err != nil {
		return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "read order")
	}
	// Only the certificate that dual-signed the purchase may ask about it; to anyone
	// else the order does not exist (the same answer as an unknown XID).
	signer := pki.ThumbprintOf(v.Signer)
	if len(order.Cardholder) == 0 || subtle.ConstantTimeCompare(order.Cardholder, signer[:]) != 1 {
		return nil, setproto.Errorf(setpb.Reason_UNKNOWN_TRANSACTION, "no purchase %s", req.GetXid())
	}
	res := &setpb.InquiryResponse{Xid: req.GetXid(), Rrpid: req.GetRrpid(), ChallEc: req.GetChallEc(),
		State: string(order.State), Amount: order.Amount, Currency: order.Currency}
	// The certificates go with the answer: unlike a purchase, an inquiry may come from
	// a wallet that holds none of them (another process, a wallet restarted since),
	// and it has no way to ask again for them.
	der, err := setproto.SignMessage(setpb.ContentKind_INQUIRY_RESPONSE, res, m.cfg.Sign, m.cfg.Clock(), m.cfg.Sign.Certificates())
	if err != nil {
		return nil, err
	}
	return &setpb.Signed{Cms: der}, nil
}
