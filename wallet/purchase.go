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
	mu   sync.Mutex
	seen [][]byte // thumbprints of merchant and gateway certificates verified before
}

// New checks cfg and returns the wallet.
func New(cfg Config) (*Wallet, error) {
	if cfg.Identity.Key == nil || cfg.Identity.Cert == nil || cfg.Trust == nil || cfg.Merchant == nil || cfg.Brand == "" {
		return nil, errors.New("wallet: identity, trust, merchant client and brand are required")
	}
	if err := pki.ValidatePAN(cfg.Identity.Card.PAN); err != nil {
		return nil, fmt.Errorf("wallet: card: %w", err)
	}
	if cfg.Language == "" {
		cfg.Language = "en"
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, c := range cfg.Trust.Intermediates {
		cfg.Trust.Cache.Add(c)
	}
	return &Wallet{cfg: cfg, me: setproto.Party{Key: cfg.Identity.Key, Cert: cfg.Identity.Cert, Chain: cfg.Identity.Chain}}, nil
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

func (w *Wallet) known() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out [][]byte
	for _, c := range w.cfg.Trust.Intermediates {
		tp := pki.ThumbprintOf(c)
		out = append(out, tp[:])
	}
	for _, tp := range w.seen {
		if len(out) < setproto.MaxKnownThumbprint {
			out = append(out, tp)
		}
	}
	return out
}

// referenced returns the certificates refs name that the trust's cache holds (Open has
// checked that every reference is a thumbprint).
func (w *Wallet) referenced(refs [][]byte) []*x509.Certificate {
	var out []*x509.Certificate
	for _, r := range refs {
		var tp pki.Thumbprint
		if len(r) != len(tp) {
			continue
		}
		copy(tp[:], r)
		if c, ok := w.cfg.Trust.Cache.Get(tp); ok {
			out = append(out, c)
		}
	}
	return out
}

func (w *Wallet) remember(certs ...*x509.Certificate) {
	w.mu.Lock()
	defer w.mu.Unlock()
next:
	for _, c := range certs {
		tp := pki.ThumbprintOf(c)
		for _, s := range w.seen {
			if subtle.ConstantTimeCompare(s, tp[:]) == 1 {
				continue next
			}
		}
		w.seen = append(w.seen, tp[:])
	}
	if len(w.seen) > 8 {
		w.seen = w.seen[len(w.seen)-8:]
	}
}

// Start sends the purchase initiation and verifies the merchant's signed answer:
// the merchant's chain (role merchant, issued by the MCA) and the gateway's
// key-exchange certificate (role gateway, issued by the PCA). It prepares OI and PI.
func (w *Wallet) Start(ctx context.Context, offerID string) (*Session, error) {
	rrpid, err := setproto.NewID()
	if err != nil {
		return nil, err
	}
	chall, err := setproto.NewChallenge()
	if err != nil {
		return nil, err
	}
	req := &setpb.PInitReq{Rrpid: rrpid, Brand: w.cfg.Brand, Language: w.cfg.Language, ChallEc: chall,
		OfferId: offerID, KnownThumbprints: w.known()}
	if err := setproto.ValidatePInitReq(req); err != nil {
		return nil, err
	}
	out, err := w.cfg.Merchant.PurchaseInit(ctx, req)
	if err != nil {
		return nil, &setproto.Error{Reason: setproto.ReasonOf(err), Msg: "purchase initiation", Err: err}
	}
	v, err := w.cfg.Trust.Open(ctx, out.GetCms(), out.GetCertRefs(), setpb.ContentKind_PINIT_RES, pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature})
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
	case res.GetBrand() != w.cfg.Brand:
		return nil, setproto.Errorf(setpb.Reason_UNSUPPORTED, "brand %q", res.GetBrand())
	}
	// The gateway's certificate and its issuing CA (PCA) come embedded the first time
	// and, once announced as known, by reference only: look the references up too.
	gkx, gid, err := w.cfg.Trust.VerifyKeyExchange(ctx, res.GetGatewayKxThumbprint(), slices.Concat(v.Embedded, w.referenced(out.GetCertRefs())), pki.RoleGateway)
	if err != nil {
		return nil, err
	}
	if gid != res.GetGatewayId() {
		return nil, setproto.Errorf(setpb.Reason_CERT_WRONG_ROLE, "offer names gateway %q but the certificate is %q's", res.GetGatewayId(), gid)
	}
	w.remember(append([]*x509.Certificate{v.Signer, gkx}, v.Embedded...)...)

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
		Offer: res, Merchant: v.Signer, GatewayKX: gkx,
		OI: &setpb.OrderInfo{Xid: res.GetXid(), Rrpid: oiRRPID, ChallEc: oiChall, ChallM: res.GetChallM(),
			MerchantId: res.GetMerchantId(), Brand: res.GetBrand(), OdHash: setproto.Hash([]byte(res.GetOrderDescription())),
			Amount: res.GetAmount(), Currency: res.GetCurrency(), Nonce: oiNonce,
			GatewayId: gid, GatewayKxThumbprint: gkxTP[:], OfferId: offerID},
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
