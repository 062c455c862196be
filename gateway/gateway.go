// Package gateway is the SET payment gateway: it opens the merchant's authorization
// request and the cardholder's payment instructions with its key-exchange key inside a
// token, checks the merchant, the dual signature and the card binding, asks the issuer,
// records the authorization exactly once and answers, signed and enveloped, to the
// merchant.
package gateway

import (
	"context"
	"crypto"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
)

// DefaultAuthValidity is how long an authorization may be captured.
const DefaultAuthValidity = 7 * 24 * time.Hour

// DefaultClaimLease is how long a replica's claim on an authorization, committed
// before it asks the issuer, keeps other replicas from asking: after it a claim left
// by a crashed replica is taken over (see Config.ClaimLease).
const DefaultClaimLease = 30 * time.Second

// DefaultClaimWait is how long a duplicate waits for another request's answer (see
// Config.ClaimWait).
const DefaultClaimWait = 2 * time.Second

// authScope is the store scope of authorization claims and answers.
const authScope = "gateway/auth"

// AuthKey is the idempotency key of merchant's authorization of transaction xid: the
// store's request ID for it and the key the issuer is asked with, on every replica and
// every retry: base64url(SHA-256(merchant ‖ 0x00 ‖ XID)).
func AuthKey(merchantID, xid string) string {
	return base64.RawURLEncoding.EncodeToString(setproto.Hash([]byte(merchantID + "\x00" + xid)))
}

// Config configures a Gateway.
type Config struct {
	Sign       setproto.Party    // the gateway's signature key (token) and certificate
	KXCert     *x509.Certificate // the gateway's key-exchange certificate
	KXKey      crypto.Decrypter  // its token key
	Trust      *setproto.Trust
	Store      store.DB
	PANHashKey store.PANHasher // store.NewPANHasher over a MAC key in the token: nothing on disk confirms a PAN
	Issuer     Issuer
	// Envelope sets the key transport of answers to merchants.
	Envelope     setproto.EnvelopeOptions
	AuthValidity time.Duration // 0: DefaultAuthValidity
	// ClaimLease (0: DefaultClaimLease) is how long the claim on an authorization,
	// committed before the issuer is asked, holds off every other replica; a retry that
	// finds the claim live is refused with a retryable GATEWAY_UNAVAILABLE. After it,
	// the claim of a replica that crashed is taken over and the issuer asked again with
	// the same key. Make it longer than the issuer's slowest answer.
	ClaimLease time.Duration
	// ClaimWait (0: DefaultClaimWait) is how long a request that finds another's live
	// claim on its authorization (a concurrent duplicate, or a retry while the first
	// is at the issuer) waits for the stored answer, polling the store, before it is
	// refused with a retryable GATEWAY_UNAVAILABLE; the request's deadline bounds it.
	ClaimWait time.Duration
	Clock     func() time.Time
	Logger    *slog.Logger
	// Decided, if set, hears each new authorization decision (not retries answered
	// from the store), e.g. to count authorizations by result in metrics.
	Decided func(result setpb.AuthResult)
}

// Gateway serves setpb.GatewayServer.
type Gateway struct {
	setpb.UnimplementedGatewayServer
	cfg     Config
	id      string
	kxThumb pki.Thumbprint // of cfg.KXCert: what a PI must name
}

// New checks cfg and returns the gateway.
func New(cfg Config) (*Gateway, error) {
	switch {
	case cfg.ClaimLease < 0:
		return nil, errors.New("gateway: claim lease must be positive (0: the default)")
	case cfg.ClaimWait < 0:
		return nil, errors.New("gateway: claim wait must be positive (0: the default)")
	case cfg.Sign.Key == nil || cfg.Sign.Cert == nil || cfg.KXCert == nil || cfg.KXKey == nil:
		return nil, errors.New("gateway: signature and key-exchange keys and certificates are required")
	case cfg.Trust == nil || cfg.Store == nil || cfg.Issuer == nil:
		return nil, errors.New("gateway: trust, store and issuer are required")
	case cfg.PANHashKey == nil:
		return nil, errors.New("gateway: a PAN hasher (a MAC key in the token) is required")
	}
	r, id, err := pki.EntityID(cfg.Sign.Cert)
	if err != nil || r != pki.RoleGateway {
		return nil, fmt.Errorf("gateway: signature certificate is not a gateway's: %v", err)
	}
	if r2, id2, err := pki.EntityID(cfg.KXCert); err != nil || r2 != pki.RoleGateway || id2 != id {
		return nil, fmt.Errorf("gateway: key-exchange certificate is not gateway %q's", id)
	}
	if cfg.AuthValidity == 0 {
		cfg.AuthValidity = DefaultAuthValidity
	}
	if cfg.ClaimLease == 0 {
		cfg.ClaimLease = DefaultClaimLease
	}
	if cfg.ClaimWait == 0 {
		cfg.ClaimWait = DefaultClaimWait
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Capture tokens carry no certificates: the gateway verifies its own by thumbprint.
	for _, c := range cfg.Sign.Certificates() {
		cfg.Trust.Cache.Add(c)
	}
	return &Gateway{cfg: cfg, id: id, kxThumb: pki.ThumbprintOf(cfg.KXCert)}, nil
}

// ID is the gateway id.
func (g *Gateway) ID() string { return g.id }

// Register adds the service to a gRPC server.
func (g *Gateway) Register(s grpc.ServiceRegistrar) { setpb.RegisterGatewayServer(s, g) }

// Authorize implements setpb.GatewayServer.
func (g *Gateway) Authorize(ctx context.Context, in *setpb.Enveloped) (*setpb.Enveloped, error) {
	out, err := g.authorize(ctx, in)
	if err != nil {
		g.cfg.Logger.Warn("authorization refused", "result", "REFUSED", "reason", setproto.ReasonOf(err).String(), "err", err)
		return nil, setproto.Status(err)
	}
	return out, nil
}

// checked is an authorization request that passed every check.
type checked struct {
	req          *setpb.AuthRequest
	reqHash      []byte
	pi           *setpb.PaymentInstructions
	merchantKX   *x509.Certificate
	cardholderID string
}

// lastFour is how the gateway shows a PAN anywhere (store, logs, answers): the last 4
// digits only (docs/protocol.md, "Stored PAN data").
func lastFour(pan string) string {
	if m, err := store.MaskPAN(pan); err == nil {
		return m
	}
	return "(not a PAN)"
}

// Purposes of the gateway's key-exchange key operations on an authorization.
const (
	opDecryptAuth = "decrypt authorization request"
	opDecryptPI   = "decrypt payment instructions"
)

// check verifies an authorization request; ops lists the key-exchange key
// operations it made, for the audit of a refusal.
func (g *Gateway) check(ctx context.Context, in *setpb.Enveloped) (*checked, []string, error) {
	var ops []string
	fail := func(err error) (*checked, []string, error) { return nil, ops, err }
	tlsID, fromTLS, err := transportMerchant(ctx)
	if err != nil {
		return fail(err)
	}
	inner, err := setproto.Unseal(in.GetCms(), setpb.ContentKind_AUTH_REQUEST, g.cfg.KXCert, g.cfg.KXKey)
	if err != nil {
		if setproto.ReasonOf(err) == setpb.Reason_DECRYPT_FAILED {
			ops = append(ops, opDecryptAuth)
		}
		return fail(err)
	}
	ops = append(ops, opDecryptAuth)
	v, err := g.cfg.Trust.Open(ctx, inner, in.GetCertRefs(), setpb.ContentKind_AUTH_REQUEST,
		pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature})
	if err != nil {
		return fail(err)
	}
	req, err := setproto.ParseAuthRequest(v.Content)
	if err != nil {
		return fail(err)
	}
	if req.GetMerchantId() != v.EntityID {
		return fail(setproto.Errorf(setpb.Reason_MERCHANT_MISMATCH, "request names merchant %q but %q signed it", req.GetMerchantId(), v.EntityID))
	}
	if err := checkSigner(tlsID, fromTLS, v.EntityID); err != nil {
		return fail(err)
	}
	mkx, mid, err := g.cfg.Trust.VerifyKeyExchange(ctx, req.GetMerchantKxThumbprint(), nil, pki.RoleMerchant)
	if err != nil {
		return fail(err)
	}
	if mid != v.EntityID {
		return fail(setproto.Errorf(setpb.Reason_MERCHANT_MISMATCH, "key-exchange certificate of %q offered by %q", mid, v.EntityID))
	}
	piBytes, err := setproto.Unseal(req.GetPiEnvelope(), setpb.ContentKind_PAYMENT_INSTRUCTIONS, g.cfg.KXCert, g.cfg.KXKey)
	if err == nil || setproto.ReasonOf(err) == setpb.Reason_DECRYPT_FAILED {
		ops = append(ops, opDecryptPI)
	}
	if err != nil {
		return fail(err)
	}
	pi, err := setproto.ParsePaymentInstructions(piBytes)
	if err != nil {
		return fail(err)
	}
	switch {
	case pi.GetMerchantId() != req.GetMerchantId():
		return fail(setproto.Errorf(setpb.Reason_MERCHANT_MISMATCH, "the PI is for another merchant than %q", req.GetMerchantId()))
	case pi.GetXid() != req.GetXid():
		return fail(setproto.Errorf(setpb.Reason_XID_MISMATCH, "the PI belongs to another transaction than %s", req.GetXid()))
	case subtle.ConstantTimeCompare(pi.GetOiHash(), req.GetOiHash()) != 1:
		return fail(setproto.Errorf(setpb.Reason_HASH_MISMATCH, "the PI's H(OI) differs from the merchant's"))
	case pi.GetAmount() != req.GetAmount() || pi.GetCurrency() != req.GetCurrency():
		return fail(setproto.Errorf(setpb.Reason_AMOUNT_MISMATCH, "the PI's amount differs from the merchant's %d %s", req.GetAmount(), req.GetCurrency()))
	case pi.GetGatewayId() != g.id:
		// The cardholder signs (through H(PI)) which gateway it means: a PI meant for
		// another gateway, even one sharing this key, is not authorized here.
		return fail(setproto.Errorf(setpb.Reason_GATEWAY_MISMATCH, "the PI is for gateway %q, not %q", pi.GetGatewayId(), g.id))
	case subtle.ConstantTimeCompare(pi.GetGatewayKxThumbprint(), g.kxThumb[:]) != 1:
		return fail(setproto.Errorf(setpb.Reason_GATEWAY_MISMATCH, "the PI names another key-exchange certificate of the gateway"))
	}
	dual, err := g.cfg.Trust.VerifyDual(ctx, req.GetDualSignature(), setproto.Hash(piBytes), req.GetOiHash())
	if err != nil {
		return fail(err)
	}
	if err := pki.CheckCardholderPAN(dual.Signer, pi.GetPan(), pi.GetExpiry(), pi.GetPanSecret()); err != nil {
		return fail(setproto.Wrap(setpb.Reason_PAN_MISMATCH, err, "card %s", lastFour(pi.GetPan())))
	}
	return &checked{req: req, reqHash: setproto.Hash(v.Content), pi: pi, merchantKX: mkx, cardholderID: dual.EntityID}, ops, nil
}

func (g *Gateway) authorize(ctx context.Context, in *setpb.Enveloped) (*setpb.Enveloped, error) {
	if in == nil {
		return nil, setproto.Errorf(setpb.Reason_MALFORMED, "empty request")
	}
	now := g.cfg.Clock()
	c, ops, err := g.check(ctx, in)
	if err != nil {
		// The key-exchange key was used even though the request is refused.
		g.auditOps(ctx, now, "", ops, "refused: "+setproto.ReasonOf(err).String())
		return nil, err
	}
	req, pi := c.req, c.pi
	// Stored, logged and answered: the last 4 digits only (docs/protocol.md).
	mask, err := store.MaskPAN(pi.GetPan())
	if err != nil {
		return nil, setproto.Wrap(setpb.Reason_MALFORMED, err, "PAN")
	}
	key := AuthKey(req.GetMerchantId(), req.GetXid())
	panHash, err := g.cfg.PANHashKey.HashPAN(ctx, pi.GetPan())
	if err != nil {
		return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "PAN hash")
	}
	refuseReused := func(err error) error {
		g.auditOps(ctx, now, req.GetXid(), ops, "refused: REPLAY")
		if errors.Is(err, store.ErrIDReuse) {
			return setproto.Wrap(setpb.Reason_REPLAY, err, "transaction %s of merchant %q was already authorized with another request", req.GetXid(), req.GetMerchantId())
		}
		return setproto.Wrap(setpb.Reason_REPLAY, err, "transaction %s of merchant %q already exists", req.GetXid(), req.GetMerchantId())
	}
	// Exactly once across replicas: the claim commits BEFORE the issuer is asked, so a
	// retry on any replica finds it and never asks the issuer a second time.
	cl, err := g.claim(ctx, key, c.reqHash)
	if errors.Is(err, store.ErrConflict) {
		return nil, refuseReused(err)
	}
	if err != nil {
		return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "claim authorization")
	}
	var (
		resp     []byte
		replayed bool
		result   = "(stored answer)"
	)
	switch {
	case cl.State == store.ClaimAnswered:
		resp, replayed = cl.Response, true
	case cl.State == store.ClaimPending:
		// Another request (this replica or another) is still asking the issuer after
		// ClaimWait. Refuse, retryably: the merchant keeps the order pending and
		// retries, and gets the stored answer once it is there; waiting longer would
		// hold a handler for as long as a slow issuer takes.
		g.auditOps(ctx, now, req.GetXid(), ops, "refused: authorization in progress")
		return nil, setproto.Errorf(setpb.Reason_GATEWAY_UNAVAILABLE,
			"authorization of transaction %s of merchant %q in progress, retry", req.GetXid(), req.GetMerchantId())
	case cl.Holds():
		if cl.State == store.ClaimTakenOver {
			g.cfg.Logger.Warn("authorization claim taken over after its lease ran out (a replica stopped mid-authorization); asking the issuer again with the same key",
				"merchant", req.GetMerchantId(), "xid", req.GetXid())
		}
		// The issuer remembers its decision per key, so asking again after a takeover,
		// or after a released claim, never holds funds twice.
		dec, err := g.cfg.Issuer.Authorize(key, pi.GetPan(), pi.GetExpiry(), pi.GetAmount(), pi.GetCurrency(), now)
		if err != nil {
			g.release(ctx, key, cl.Token)
			return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "issuer")
		}
		resp, replayed, err = g.cfg.Store.CompleteClaim(ctx, authScope, key, c.reqHash, func(ctx context.Context, tx store.Tx) ([]byte, error) {
			return g.record(ctx, tx, c, dec, panHash, mask, now)
		})
		if err != nil {
			g.release(ctx, key, cl.Token)
			if errors.Is(err, store.ErrConflict) {
				return nil, refuseReused(err)
			}
			return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "record authorization")
		}
		if !replayed {
			result = dec.Result.String()
			if g.cfg.Decided != nil {
				g.cfg.Decided(dec.Result)
			}
		}
	default:
		return nil, setproto.Errorf(setpb.Reason_INTERNAL, "claim authorization: unexpected state %v", cl.State)
	}
	if replayed {
		g.auditOps(ctx, now, req.GetXid(), ops, "retry answered from store")
	}
	g.cfg.Logger.Info("authorization", "merchant", req.GetMerchantId(), "xid", req.GetXid(), "pan", mask,
		"amount", req.GetAmount(), "currency", req.GetCurrency(), "result", result, "replayed", replayed)
	return &setpb.Enveloped{Cms: resp}, nil
}

// claim claims the authorization key. A claim live under another request is waited
// on, polling the store, for up to ClaimWait (and the request's deadline): concurrent
// duplicates are common (a merchant's retry racing its first try) and the first
// answer is usually milliseconds away. If the lease runs out meanwhile, the waiter
// takes the claim over. It returns ClaimPending only when the wait is over.
func (g *Gateway) claim(ctx context.Context, key string, reqHash []byte) (store.Claim, error) {
	deadline := time.Now().Add(g.cfg.ClaimWait)
	poll := 5 * time.Millisecond
	for {
		cl, err := g.cfg.Store.Claim(ctx, authScope, key, reqHash, g.cfg.Clock(), g.cfg.ClaimLease)
		if err != nil || cl.State != store.ClaimPending {
			return cl, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return cl, nil
		}
		t := time.NewTimer(min(poll, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return cl, nil
		case <-t.C:
		}
		poll = min(2*poll, 100*time.Millisecond)
	}
}

// release gives up a claim whose authorization failed (the issuer or the store
// failed), so that the merchant's retry, on any replica, asks again at once with the
// same key; if even that fails, the claim is taken over after its lease.
func (g *Gateway) release(ctx context.Context, key string, token []byte) {
	if err := g.cfg.Store.ReleaseClaim(context.WithoutCancel(ctx), authScope, key, token); err != nil {
		g.cfg.Logger.Warn("authorization claim not released; a retry waits out its lease", "err", err)
	}
}

// record stores the authorization (and a sale's capture) and returns the enveloped,
// signed answer, all in the caller's transaction: nothing is half-written.
func (g *Gateway) record(ctx context.Context, tx store.Tx, c *checked, dec Decision, panHash []byte, mask string, now time.Time) ([]byte, error) {
	req, pi := c.req, c.pi
	approved := dec.Result == setpb.AuthResult_APPROVED
	a := &store.Authorization{
		MerchantID: req.GetMerchantId(), XID: req.GetXid(), Amount: req.GetAmount(), Currency: req.GetCurrency(),
		Status: store.AuthDeclined, DeclineReason: dec.Result.String(), PANHash: panHash, PANHashKey: g.cfg.PANHashKey.KeyID(), PANMask: mask,
		CardExpiry: pi.GetExpiry(), CreatedAt: now, ExpiresAt: now.Add(g.cfg.AuthValidity),
	}
	res := &setpb.AuthResponse{
		Xid: req.GetXid(), Rrpid: req.GetRrpid(), ChallM: req.GetChallM(), MerchantId: req.GetMerchantId(),
		Result: dec.Result, Currency: req.GetCurrency(), PanMask: mask,
	}
	if approved {
		tokenID, err := setproto.NewID()
		if err != nil {
			return nil, err
		}
		a.Status, a.DeclineReason, a.AuthCode, a.AuthorizedAmount, a.CaptureTokenID = store.AuthAuthorized, "", dec.AuthCode, req.GetAmount(), tokenID
		res.AuthCode, res.AuthorizedAmount = dec.AuthCode, req.GetAmount()
		if !req.GetSale() {
			tok, err := setproto.SignMessage(setpb.ContentKind_CAPTURE_TOKEN, &setpb.CaptureToken{
				TokenId: tokenID, Xid: req.GetXid(), MerchantId: req.GetMerchantId(), Amount: req.GetAmount(),
				Currency: req.GetCurrency(), AuthCode: dec.AuthCode, ExpiresUnix: a.ExpiresAt.Unix(),
			}, g.cfg.Sign, now, nil)
			if err != nil {
				return nil, err
			}
			res.CaptureToken = tok
		}
	}
	if err := tx.InsertAuthorization(ctx, a); err != nil {
		return nil, err
	}
	if approved && req.GetSale() {
		if _, err := tx.InsertCapture(ctx, &store.Capture{
			MerchantID: req.GetMerchantId(), CaptureID: "sale-" + req.GetXid(), XID: req.GetXid(),
			Amount: req.GetAmount(), Currency: req.GetCurrency(), CreatedAt: now,
		}); err != nil {
			return nil, err
		}
		res.Captured = true
	}
	signed, err := setproto.SignMessage(setpb.ContentKind_AUTH_RESPONSE, res, g.cfg.Sign, now, g.cfg.Sign.Certificates())
	if err != nil {
		return nil, err
	}
	// The audit chain records every private-key operation of this authorization, in
	// the same transaction as the authorization itself.
	actor := "gateway:" + g.id
	ops := []store.AuditRecord{
		{Purpose: opDecryptAuth, KeyURI: setproto.KeyURI(g.cfg.KXKey)},
		{Purpose: opDecryptPI, KeyURI: setproto.KeyURI(g.cfg.KXKey)},
		{Purpose: "sign authorization response", KeyURI: setproto.KeyURI(g.cfg.Sign.Key), Details: dec.Result.String()},
	}
	if len(res.CaptureToken) > 0 {
		ops = append(ops, store.AuditRecord{Purpose: "sign capture token", KeyURI: setproto.KeyURI(g.cfg.Sign.Key)})
	}
	for _, op := range ops {
		op.Time, op.Actor, op.XID = now, actor, req.GetXid()
		if _, err := tx.AppendAudit(ctx, op); err != nil {
			return nil, err
		}
	}
	return setproto.Seal(setpb.ContentKind_AUTH_RESPONSE, signed, c.merchantKX, g.cfg.Envelope)
}

// auditOps records key-exchange key operations of an authorization request that
// changed no state (refused, or answered from the store), each in its own
// transaction.
func (g *Gateway) auditOps(ctx context.Context, now time.Time, xid string, ops []string, details string) {
	for _, op := range ops {
		g.audit(ctx, now, xid, store.AuditRecord{Purpose: op, KeyURI: setproto.KeyURI(g.cfg.KXKey), Details: details})
	}
}
