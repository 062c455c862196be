package wallet

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
)

// Config configures a Wallet for purchases.
type Config struct {
	Identity Identity
	// Trust verifies merchants and gateways; its Intermediates (brand, MCA, PCA) are
	// announced to merchants by thumbprint so they need not be sent.
	Trust    *setproto.Trust
	Merchant setpb.MerchantClient
	Brand    string
	Language string // default "en"
	// Envelope sets the key transport of the PI envelope to the gateway.
	Envelope setproto.EnvelopeOptions
	Clock    func() time.Time
	Logger   *slog.Logger
}

// Wallet buys from one merchant with one card.
type Wallet struct {
	cfg  Config
	me   setproto.Party
	init *Initiator
}

// New checks cfg and returns the wallet.
func New(cfg Config) (*Wallet, error) {
	if cfg.Identity.Key == nil || cfg.Identity.Cert == nil || cfg.Trust == nil || cfg.Merchant == nil || cfg.Brand == "" {
		return nil, errors.New("wallet: identity, trust, merchant client and brand are required")
	}
	if err := pki.ValidatePAN(cfg.Identity.Card.PAN); err != nil {
		return nil, fmt.Errorf("wallet: card: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ini, err := NewInitiator(InitiatorConfig{Trust: cfg.Trust, Merchant: cfg.Merchant, Brand: cfg.Brand, Language: cfg.Language})
	if err != nil {
		return nil, err
	}
	cfg.Language = ini.cfg.Language
	return &Wallet{cfg: cfg, me: setproto.Party{Key: cfg.Identity.Key, Cert: cfg.Identity.Cert, Chain: cfg.Identity.Chain}, init: ini}, nil
}

// InitiatorConfig configures an Initiator: Config without the card.
type InitiatorConfig struct {
	Trust    *setproto.Trust
	Merchant setpb.MerchantClient
	Brand    string
	Language string // default "en"
}

// Initiator runs purchase initiations with one merchant. It needs neither the
// cardholder's key nor the card: a wallet shows the verified offer (merchant and
// gateway) before the cardholder unlocks the card to pay. It remembers the
// certificates it verified, announces them to the merchant, and is safe for
// concurrent use.
type Initiator struct {
	cfg  InitiatorConfig
	mu   sync.Mutex
	seen [][]byte // thumbprints of merchant and gateway certificates verified before
}

// NewInitiator checks cfg and returns the initiator.
func NewInitiator(cfg InitiatorConfig) (*Initiator, error) {
	if cfg.Trust == nil || cfg.Trust.Verifier == nil || cfg.Trust.Cache == nil || cfg.Merchant == nil || cfg.Brand == "" {
		return nil, errors.New("wallet: trust (verifier and cache), merchant client and brand are required")
	}
	if cfg.Language == "" {
		cfg.Language = "en"
	}
	for _, c := range cfg.Trust.Intermediates {
		cfg.Trust.Cache.Add(c)
	}
	return &Initiator{cfg: cfg}, nil
}

// Offer is the merchant's signed answer to a purchase initiation, verified: the
// merchant's signature certificate with its chain (role merchant, from the MCA) and
// the gateway's key-exchange certificate (role gateway, from the PCA) that will read
// the card data.
type Offer struct {
	OfferID       string
	Res           *setpb.PInitRes
	Merchant      *x509.Certificate
	MerchantChain []*x509.Certificate // leaf first, root last
	GatewayKX     *x509.Certificate
	GatewayID     string
}

// Session is a purchase between initiation and request: the merchant's signed offer,
// the verified merchant and gateway certificates, and the OI and PI the wallet will
// dual-sign. Callers may inspect them before sending.
type Session struct {
	Offer     *setpb.PInitRes
	Merchant  *x509.Certificate // merchant signature certificate, verified (role merchant, from the MCA)
	GatewayKX *x509.Certificate // gateway key-exchange certificate, verified (role gateway, from the PCA)
	OI        *setpb.OrderInfo
	PI        *setpb.PaymentInstructions
}

// Receipt is the verified outcome of a purchase.
type Receipt struct {
	XID      string
	Merchant string
	Gateway  string
	Result   setpb.AuthResult
	AuthCode string
	Amount   int64
	Currency string
	Captured bool
}

// Approved reports whether the issuer approved.
func (r *Receipt) Approved() bool { return r.Result == setpb.AuthResult_APPROVED }

// Buy runs a whole purchase of offerID.
func (w *Wallet) Buy(ctx context.Context, offerID string) (*Receipt, error) {
	s, err := w.Start(ctx, offerID)
	if err != nil {
		return nil, err
	}
	req, err := w.Prepare(s)
	if err != nil {
		return nil, err
	}
	return w.Send(ctx, s, req)
}

func (i *Initiator) known() [][]byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	var out [][]byte
	for _, c := range i.cfg.Trust.Intermediates {
		tp := pki.ThumbprintOf(c)
		out = append(out, tp[:])
	}
	for _, tp := range i.seen {
		if len(out) < setproto.MaxKnownThumbprint {
			out = append(out, tp)
		}
	}
	return out
}

func (i *Initiator) remember(certs ...*x509.Certificate) {
	i.mu.Lock()
	defer i.mu.Unlock()
next:
	for _, c := range certs {
		tp := pki.ThumbprintOf(c)
		for _, s := range i.seen {
			if subtle.ConstantTimeCompare(s, tp[:]) == 1 {
				continue next
			}
		}
		i.seen = append(i.seen, tp[:])
	}
	if len(i.seen) > 8 {
		i.seen = i.seen[len(i.seen)-8:]
	}
}

// referenced returns the certificates refs name that the trust's cache holds (Open has
// checked that every reference is a thumbprint).
func (i *Initiator) referenced(refs [][]byte) []*x509.Certificate {
	var out []*x509.Certificate
	for _, r := range refs {
		var tp pki.Thumbprint
		if len(r) != len(tp) {
			continue
		}
		copy(tp[:], r)
		if c, ok := i.cfg.Trust.Cache.Get(tp); ok {
			out = append(out, c)
		}
	}
	return out
}

// Start sends the purchase initiation, verifies the merchant's signed answer (see
// Initiator.Initiate) and prepares OI and PI.
func (w *Wallet) Start(ctx context.Context, offerID string) (*Session, error) {
	o, err := w.init.Initiate(ctx, offerID)
	if err != nil {
		return nil, err
	}
	return w.Session(o)
}

// Initiate sends the purchase initiation for offerID and verifies the merchant's
// signed answer: the merchant's chain (role merchant, issued by the MCA) and the
// gateway's key-exchange certificate (role gateway, issued by the PCA).
func (i *Initiator) Initiate(ctx context.Context, offerID string) (*Offer, error) {
	rrpid, err := setproto.NewID()
	if err != nil {
		return nil, err
	}
	chall, err := setproto.NewChallenge()
	if err != nil {
		return nil, err
	}
	req := &setpb.PInitReq{Rrpid: rrpid, Brand: i.cfg.Brand, Language: i.cfg.Language, ChallEc: chall,
		OfferId: offerID, KnownThumbprints: i.known()}
	if err := setproto.ValidatePInitReq(req); err != nil {
		return nil, err
	}
	out, err := i.cfg.Merchant.PurchaseInit(ctx, req)
	if err != nil {
		return nil, &setproto.Error{Reason: setproto.ReasonOf(err), Msg: "purchase initiation", Err: err}
	}
	v, err := i.cfg.Trust.Open(ctx, out.GetCms(), out.GetCertRefs(), setpb.ContentKind_PINIT_RES, pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature})
	if err != nil {
		return nil, err
	}
	res, err := setproto.ParsePInitRes(v.Content)
	if err != nil {
		return nil, err
	}
	switch {
	case res.GetRrpid() != rrpid || subtle.ConstantTimeCompare(res.GetChallEc(), chall) != 1:
		return nil, setproto.Errorf(setpb.Reason_CHALLENGE_MISMATCH, "the merchant's answer does not echo this request")
	case res.GetMerchantId() != v.EntityID:
		return nil, setproto.Errorf(setpb.Reason_MERCHANT_MISMATCH, "offer names merchant %q but %q signed it", res.GetMerchantId(), v.EntityID)
	case res.GetBrand() != i.cfg.Brand:
		return nil, setproto.Errorf(setpb.Reason_UNSUPPORTED, "brand %q", res.GetBrand())
	}
	// The gateway's certificate and its issuing CA (PCA) come embedded the first time
	// and, once announced as known, by reference only: look the references up too.
	gkx, gid, err := i.cfg.Trust.VerifyKeyExchange(ctx, res.GetGatewayKxThumbprint(), slices.Concat(v.Embedded, i.referenced(out.GetCertRefs())), pki.RoleGateway)
	if err != nil {
		return nil, err
	}
	if gid != res.GetGatewayId() {
		return nil, setproto.Errorf(setpb.Reason_CERT_WRONG_ROLE, "offer names gateway %q but the certificate is %q's", res.GetGatewayId(), gid)
	}
	i.remember(append([]*x509.Certificate{v.Signer, gkx}, v.Embedded...)...)
	return &Offer{OfferID: offerID, Res: res, Merchant: v.Signer, MerchantChain: v.Chain, GatewayKX: gkx, GatewayID: gid}, nil
}

// Session prepares the OI and PI of a purchase of the verified offer o with the
// wallet's card. o must come from an Initiator on the wallet's trust (Start does
// that); it is for one purchase.
func (w *Wallet) Session(o *Offer) (*Session, error) {
	if o == nil || o.Res == nil || o.GatewayKX == nil || o.Merchant == nil {
		return nil, errors.New("wallet: no verified offer")
	}
	res, gkx, gid := o.Res, o.GatewayKX, o.GatewayID
	if res.GetBrand() != w.cfg.Brand {
		return nil, setproto.Errorf(setpb.Reason_UNSUPPORTED, "brand %q, the card is %q", res.GetBrand(), w.cfg.Brand)
	}
	oiRRPID, err := setproto.NewID()
	if err != nil {
		return nil, err
	}
	oiChall, err := setproto.NewChallenge()
	if err != nil {
		return nil, err
	}
	oiNonce, err := setproto.Random(setproto.NonceLen)
	if err != nil {
		return nil, err
	}
	piNonce, err := setproto.Random(setproto.NonceLen)
	if err != nil {
		return nil, err
	}
	card := w.cfg.Identity.Card
	// Both halves of the dual signature name the gateway the cardholder means (the
	// certificate just verified), so neither merchant nor gateway can redirect them.
	gkxTP := pki.ThumbprintOf(gkx)
	return &Session{
		Offer: res, Merchant: o.Merchant, GatewayKX: gkx,
		OI: &setpb.OrderInfo{Xid: res.GetXid(), Rrpid: oiRRPID, ChallEc: oiChall, ChallM: res.GetChallM(),
			MerchantId: res.GetMerchantId(), Brand: res.GetBrand(), OdHash: setproto.Hash([]byte(res.GetOrderDescription())),
			Amount: res.GetAmount(), Currency: res.GetCurrency(), Nonce: oiNonce,
			GatewayId: gid, GatewayKxThumbprint: gkxTP[:], OfferId: o.OfferID},
		PI: &setpb.PaymentInstructions{Xid: res.GetXid(), Rrpid: oiRRPID, MerchantId: res.GetMerchantId(),
			Pan: card.PAN, Expiry: card.Expiry, PanSecret: card.PANSecret, Amount: res.GetAmount(),
			Currency: res.GetCurrency(), Nonce: piNonce, GatewayId: gid, GatewayKxThumbprint: gkxTP[:]},
	}, nil
}

// Prepare builds the purchase request: the OI, H(PI), the PI enveloped to the
// gateway's key-exchange certificate and the dual signature over H(PI) || H(OI)
// with the cardholder's key. PI.OiHash is set here from the OI.
func (w *Wallet) Prepare(s *Session) (*setpb.PurchaseRequest, error) {
	oi, err := setproto.Marshal(s.OI)
	if err != nil {
		return nil, err
	}
	s.PI.OiHash = setproto.Hash(oi)
	pi, err := setproto.Marshal(s.PI)
	if err != nil {
		return nil, err
	}
	env, err := setproto.Seal(setpb.ContentKind_PAYMENT_INSTRUCTIONS, pi, s.GatewayKX, w.cfg.Envelope)
	if err != nil {
		return nil, err
	}
	piHash := setproto.Hash(pi)
	dual, err := setproto.DualSign(w.me, piHash, s.PI.OiHash, w.cfg.Clock())
	if err != nil {
		return nil, err
	}
	return &setpb.PurchaseRequest{OrderInfo: oi, PiHash: piHash, PiEnvelope: env, DualSignature: dual}, nil
}

// Send sends a prepared request and verifies the merchant's signed answer.
func (w *Wallet) Send(ctx context.Context, s *Session, req *setpb.PurchaseRequest) (*Receipt, error) {
	out, err := w.cfg.Merchant.Purchase(ctx, req)
	if err != nil {
		return nil, &setproto.Error{Reason: setproto.ReasonOf(err), Msg: "purchase", Err: err}
	}
	return w.VerifyResponse(ctx, s, out)
}

// VerifyResponse verifies a purchase response against the session.
func (w *Wallet) VerifyResponse(ctx context.Context, s *Session, out *setpb.Signed) (*Receipt, error) {
	v, err := w.cfg.Trust.Open(ctx, out.GetCms(), out.GetCertRefs(), setpb.ContentKind_PURCHASE_RESPONSE, pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature})
	if err != nil {
		return nil, err
	}
	if v.EntityID != s.Offer.GetMerchantId() {
		return nil, setproto.Errorf(setpb.Reason_MERCHANT_MISMATCH, "answer signed by %q", v.EntityID)
	}
	r, err := setproto.ParsePurchaseResponse(v.Content)
	if err != nil {
		return nil, err
	}
	if r.GetXid() != s.OI.GetXid() || r.GetRrpid() != s.OI.GetRrpid() || subtle.ConstantTimeCompare(r.GetChallEc(), s.OI.GetChallEc()) != 1 {
		return nil, setproto.Errorf(setpb.Reason_CHALLENGE_MISMATCH, "the answer is not for this request")
	}
	if r.GetResult() == setpb.AuthResult_APPROVED && (r.GetAmount() != s.OI.GetAmount() || r.GetCurrency() != s.OI.GetCurrency()) {
		return nil, setproto.Errorf(setpb.Reason_AMOUNT_MISMATCH, "approved %d %s, asked %d %s", r.GetAmount(), r.GetCurrency(), s.OI.GetAmount(), s.OI.GetCurrency())
	}
	return &Receipt{XID: r.GetXid(), Merchant: v.EntityID, Gateway: s.Offer.GetGatewayId(), Result: r.GetResult(),
		AuthCode: r.GetAuthCode(), Amount: r.GetAmount(), Currency: r.GetCurrency(), Captured: r.GetCaptured()}, nil
}

// Inquire asks the merchant for the state of a purchase, signed with the cardholder
// key; the merchant's answer is verified.
func (w *Wallet) Inquire(ctx context.Context, xid string) (*setpb.InquiryResponse, error) {
	rrpid, err := setproto.NewID()
	if err != nil {
		return nil, err
	}
	chall, err := setproto.NewChallenge()
	if err != nil {
		return nil, err
	}
	req := &setpb.InquiryRequest{Xid: xid, Rrpid: rrpid, ChallEc: chall}
	// The merchant has our certificates from the dual signature; send them again only
	// if it asks.
	var out *setpb.Signed
	for _, embed := range []bool{false, true} {
		var certs []*x509.Certificate
		var refs [][]byte
		if embed {
			certs = w.me.Certificates()
		} else {
			refs = w.me.Thumbprints()
		}
		der, err := setproto.SignMessage(setpb.ContentKind_INQUIRY_REQUEST, req, w.me, w.cfg.Clock(), certs)
		if err != nil {
			return nil, err
		}
		out, err = w.cfg.Merchant.Inquiry(ctx, &setpb.Signed{Cms: der, CertRefs: refs})
		if err == nil {
			break
		}
		if embed || setproto.ReasonOf(err) != setpb.Reason_CERT_UNKNOWN {
			return nil, &setproto.Error{Reason: setproto.ReasonOf(err), Msg: "inquiry", Err: err}
		}
	}
	v, err := w.cfg.Trust.Open(ctx, out.GetCms(), out.GetCertRefs(), setpb.ContentKind_INQUIRY_RESPONSE, pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature})
	if err != nil {
		return nil, err
	}
	r, err := setproto.ParseInquiryResponse(v.Content)
	if err != nil {
		return nil, err
	}
	if r.GetXid() != xid || r.GetRrpid() != rrpid || subtle.ConstantTimeCompare(r.GetChallEc(), chall) != 1 {
		return nil, setproto.Errorf(setpb.Reason_CHALLENGE_MISMATCH, "the answer is not for this inquiry")
	}
	return r, nil
}

// MaskedPAN is the wallet's card number masked (pki.MaskPAN), what may be shown.
func (w *Wallet) MaskedPAN() string { return pki.MaskPAN(w.cfg.Identity.Card.PAN) }
