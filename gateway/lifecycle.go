package gateway

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
)

// LifecycleScope is the store.Idempotent scope of lifecycle requests; their request
// ID is LifecycleRequestID.
const LifecycleScope = "gateway/lifecycle"

// LifecycleRequestID is the exactly-once key of a lifecycle request: the merchant
// and its pair ID, hashed to a fixed length.
func LifecycleRequestID(merchantID, rrpid string) string {
	return base64.RawURLEncoding.EncodeToString(setproto.Hash([]byte(merchantID + "\x00" + rrpid)))
}

// Capture implements setpb.GatewayServer.
func (g *Gateway) Capture(ctx context.Context, in *setpb.Enveloped) (*setpb.Enveloped, error) {
	return g.serveLifecycle(ctx, setpb.ContentKind_CAPTURE_REQUEST, in)
}

// AuthReversal implements setpb.GatewayServer.
func (g *Gateway) AuthReversal(ctx context.Context, in *setpb.Enveloped) (*setpb.Enveloped, error) {
	return g.serveLifecycle(ctx, setpb.ContentKind_AUTH_REVERSAL_REQUEST, in)
}

// CaptureReversal implements setpb.GatewayServer.
func (g *Gateway) CaptureReversal(ctx context.Context, in *setpb.Enveloped) (*setpb.Enveloped, error) {
	return g.serveLifecycle(ctx, setpb.ContentKind_CAPTURE_REVERSAL_REQUEST, in)
}

// Credit implements setpb.GatewayServer.
func (g *Gateway) Credit(ctx context.Context, in *setpb.Enveloped) (*setpb.Enveloped, error) {
	return g.serveLifecycle(ctx, setpb.ContentKind_CREDIT_REQUEST, in)
}

// CreditReversal implements setpb.GatewayServer.
func (g *Gateway) CreditReversal(ctx context.Context, in *setpb.Enveloped) (*setpb.Enveloped, error) {
	return g.serveLifecycle(ctx, setpb.ContentKind_CREDIT_REVERSAL_REQUEST, in)
}

// BatchAdmin implements setpb.GatewayServer.
func (g *Gateway) BatchAdmin(ctx context.Context, in *setpb.Enveloped) (*setpb.Enveloped, error) {
	return g.serveLifecycle(ctx, setpb.ContentKind_BATCH_ADMIN_REQUEST, in)
}

// Inquiry implements setpb.GatewayServer.
func (g *Gateway) Inquiry(ctx context.Context, in *setpb.Enveloped) (*setpb.Enveloped, error) {
	return g.serveLifecycle(ctx, setpb.ContentKind_GATEWAY_INQUIRY_REQUEST, in)
}

func (g *Gateway) serveLifecycle(ctx context.Context, kind setpb.ContentKind, in *setpb.Enveloped) (*setpb.Enveloped, error) {
	out, err := g.lifecycle(ctx, kind, in)
	if err != nil {
		g.cfg.Logger.Warn("lifecycle refused", "kind", kind.String(), "result", "REFUSED", "reason", setproto.ReasonOf(err).String(), "err", err)
		return nil, setproto.Status(err)
	}
	return out, nil
}

// lcChecked is a lifecycle request that passed the envelope, signature and merchant
// checks.
type lcChecked struct {
	kind       setpb.ContentKind
	req        setproto.LifecycleRequest
	reqHash    []byte
	merchantID string
	merchantKX *x509.Certificate
	token      *setpb.CaptureToken // captures only
}

func (g *Gateway) lifecycle(ctx context.Context, kind setpb.ContentKind, in *setpb.Enveloped) (*setpb.Enveloped, error) {
	if in == nil {
		return nil, setproto.Errorf(setpb.Reason_MALFORMED, "empty request")
	}
	now := g.cfg.Clock()
	c, keyUsed, err := g.checkLifecycle(ctx, kind, in)
	if err != nil {
		if keyUsed {
			// The key-exchange key opened (or tried to open) the envelope: that is a
			// private-key operation, refused or not.
			g.audit(ctx, now, "", store.AuditRecord{Purpose: "decrypt " + kind.String(), KeyURI: setproto.KeyURI(g.cfg.KXKey),
				Details: "refused: " + setproto.ReasonOf(err).String()})
		}
		return nil, err
	}
	xid := xidOf(c.req)
	answer, replayed, err := g.cfg.Store.Idempotent(ctx, LifecycleScope, LifecycleRequestID(c.merchantID, c.req.GetRrpid()), c.reqHash,
		func(ctx context.Context, tx store.Tx) ([]byte, error) {
			return g.applyLifecycle(ctx, tx, c, now)
		})
	if errors.Is(err, store.ErrIDReuse) {
		g.audit(ctx, now, xid, store.AuditRecord{Purpose: "decrypt " + kind.String(), KeyURI: setproto.KeyURI(g.cfg.KXKey), Details: "refused: REPLAY"})
		return nil, setproto.Wrap(setpb.Reason_REPLAY, err, "pair ID %s of merchant %q was already used for another request", c.req.GetRrpid(), c.merchantID)
	}
	if err != nil {
		return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "record %s", kind)
	}
	if replayed {
		g.audit(ctx, now, xid, store.AuditRecord{Purpose: "decrypt " + kind.String(), KeyURI: setproto.KeyURI(g.cfg.KXKey), Details: "retry answered from store"})
	}
	sa, err := setproto.ParseGatewayStoredAnswer(answer)
	if err != nil {
		return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "stored answer")
	}
	if sa.GetError() != nil {
		return nil, setproto.FromDetail(sa.GetError())
	}
	g.cfg.Logger.Info("lifecycle", "kind", kind.String(), "merchant", c.merchantID, "rrpid", c.req.GetRrpid(), "xid", xid, "result", "OK", "replayed", replayed)
	return &setpb.Enveloped{Cms: sa.GetEnvelope()}, nil
}

// audit appends a record in its own transaction, for key operations whose request
// changed nothing (refused before its transaction, or answered from the store).
func (g *Gateway) audit(ctx context.Context, now time.Time, xid string, r store.AuditRecord) {
	r.Time, r.Actor, r.XID = now, "gateway:"+g.id, xid
	if _, err := g.cfg.Store.AppendAudit(ctx, r); err != nil {
		g.cfg.Logger.Error("audit append failed", "purpose", r.Purpose, "err", err)
	}
}

func xidOf(m setproto.LifecycleRequest) string {
	if x, ok := m.(interface{ GetXid() string }); ok {
		return x.GetXid()
	}
	return ""
}

func (g *Gateway) checkLifecycle(ctx context.Context, kind setpb.ContentKind, in *setpb.Enveloped) (c *lcChecked, keyUsed bool, err error) {
	tlsID, fromTLS, err := transportMerchant(ctx)
	if err != nil {
		return nil, false, err
	}
	inner, err := setproto.Unseal(in.GetCms(), kind, g.cfg.KXCert, g.cfg.KXKey)
	if err != nil {
		return nil, setproto.ReasonOf(err) == setpb.Reason_DECRYPT_FAILED, err
	}
	v, err := g.cfg.Trust.Open(ctx, inner, in.GetCertRefs(), kind, pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature})
	if err != nil {
		return nil, true, err
	}
	req, err := setproto.ParseLifecycleRequest(kind, v.Content)
	if err != nil {
		return nil, true, err
	}
	if req.GetMerchantId() != v.EntityID {
		return nil, true, setproto.Errorf(setpb.Reason_MERCHANT_MISMATCH, "request names merchant %q but %q signed it", req.GetMerchantId(), v.EntityID)
	}
	if err := checkSigner(tlsID, fromTLS, v.EntityID); err != nil {
		return nil, true, err
	}
	mkx, mid, err := g.cfg.Trust.VerifyKeyExchange(ctx, req.GetMerchantKxThumbprint(), nil, pki.RoleMerchant)
	if err != nil {
		return nil, true, err
	}
	if mid != v.EntityID {
		return nil, true, setproto.Errorf(setpb.Reason_MERCHANT_MISMATCH, "key-exchange certificate of %q offered by %q", mid, v.EntityID)
	}
	c = &lcChecked{kind: kind, req: req, reqHash: setproto.Hash(v.Content), merchantID: v.EntityID, merchantKX: mkx}
	if cr, ok := req.(*setpb.CaptureRequest); ok {
		if c.token, err = g.openCaptureToken(ctx, cr); err != nil {
			return nil, true, err
		}
	}
	return c, true, nil
}

// openCaptureToken verifies that the token is one this gateway signed, for this
// merchant and this transaction.
func (g *Gateway) openCaptureToken(ctx context.Context, r *setpb.CaptureRequest) (*setpb.CaptureToken, error) {
	// The cache is bounded: make sure our own certificates are in it.
	for _, c := range g.cfg.Sign.Certificates() {
		g.cfg.Trust.Cache.Add(c)
	}
	v, err := g.cfg.Trust.Open(ctx, r.GetCaptureToken(), g.cfg.Sign.Thumbprints(), setpb.ContentKind_CAPTURE_TOKEN,
		pki.Expect{Role: pki.RoleGateway, Purpose: pki.PurposeSignature})
	if err != nil {
		return nil, setproto.Wrap(setpb.Reason_TOKEN_MISMATCH, err, "capture token")
	}
	if v.EntityID != g.id {
		return nil, setproto.Errorf(setpb.Reason_TOKEN_MISMATCH, "capture token issued by gateway %q, not %q", v.EntityID, g.id)
	}
	tok, err := setproto.ParseCaptureToken(v.Content)
	if err != nil {
		return nil, err
	}
	switch {
	case tok.GetMerchantId() != r.GetMerchantId():
		return nil, setproto.Errorf(setpb.Reason_MERCHANT_MISMATCH, "the capture token was issued to another merchant")
	case tok.GetXid() != r.GetXid():
		return nil, setproto.Errorf(setpb.Reason_XID_MISMATCH, "the capture token belongs to another authorization than %s", r.GetXid())
	}
	return tok, nil
}

// refusal is a decided, stored "no": a retry under the same pair ID gets it again.
func refusal(err error) ([]byte, error) {
	return setproto.Marshal(&setpb.GatewayStoredAnswer{Error: setproto.DetailOf(err)})
}

// storeReason maps a store refusal to the SET reason the merchant sees; other store
// errors are internal (rolled back, nothing stored, the request may be retried).
func storeReason(err error) (setpb.Reason, bool) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return setpb.Reason_UNKNOWN_TRANSACTION, true
	case errors.Is(err, store.ErrExpired):
		return setpb.Reason_AUTH_EXPIRED, true
	case errors.Is(err, store.ErrLimitExceeded):
		return setpb.Reason_AMOUNT_EXCEEDED, true
	case errors.Is(err, store.ErrConflict):
		return setpb.Reason_INVALID_STATE, true
	case errors.Is(err, store.ErrInvalid):
		return setpb.Reason_MALFORMED, true
	}
	return 0, false
}

// applyLifecycle makes the state change of one request and returns the stored
// answer (the signed, enveloped response, or the refusal), in the caller's
// transaction together with the audit records of the key operations.
func (g *Gateway) applyLifecycle(ctx context.Context, tx store.Tx, c *lcChecked, now time.Time) ([]byte, error) {
	res, err := g.lifecycleEffect(ctx, tx, c, now)
	actor := "gateway:" + g.id
	xid := xidOf(c.req)
	decrypt := store.AuditRecord{Time: now, Actor: actor, XID: xid, KeyURI: setproto.KeyURI(g.cfg.KXKey), Purpose: "decrypt " + c.kind.String()}
	if err != nil {
		r, ok := storeReason(err)
		var se *setproto.Error
		if !ok && !errors.As(err, &se) {
			return nil, err
		}
		if ok {
			err = setproto.Wrap(r, err, "%s", c.kind)
		}
		decrypt.Details = "refused: " + setproto.ReasonOf(err).String()
		if _, err := tx.AppendAudit(ctx, decrypt); err != nil {
			return nil, err
		}
		return refusal(err)
	}
	signed, err := setproto.SignMessage(setpb.ContentKind_LIFECYCLE_RESPONSE, res, g.cfg.Sign, now, g.cfg.Sign.Certificates())
	if err != nil {
		return nil, err
	}
	for _, op := range []store.AuditRecord{decrypt,
		{Time: now, Actor: actor, XID: xid, KeyURI: setproto.KeyURI(g.cfg.Sign.Key), Purpose: "sign LIFECYCLE_RESPONSE",
			Details: fmt.Sprintf("%s %s %d %s", c.kind, res.GetItemId(), res.GetAmount(), res.GetCurrency())},
	} {
		if _, err := tx.AppendAudit(ctx, op); err != nil {
			return nil, err
		}
	}
	env, err := setproto.Seal(setpb.ContentKind_LIFECYCLE_RESPONSE, signed, c.merchantKX, g.cfg.Envelope)
	if err != nil {
		return nil, err
	}
	return setproto.Marshal(&setpb.GatewayStoredAnswer{Envelope: env})
}

// lifecycleEffect applies one request. Refusals are *setproto.Error or store
// sentinel errors; Tx methods undo their own partial writes, so the transaction
// goes on to store the refusal.
func (g *Gateway) lifecycleEffect(ctx context.Context, tx store.Tx, c *lcChecked, now time.Time) (*setpb.LifecycleResponse, error) {
	mid, rrpid := c.merchantID, c.req.GetRrpid()
	res := &setpb.LifecycleResponse{RequestKind: c.kind, Rrpid: rrpid, MerchantId: mid}
	if b, ok := c.req.(*setpb.BatchAdminRequest); ok {
		return res, g.batchAdmin(ctx, tx, b, res, now)
	}
	xid := xidOf(c.req)
	res.Xid = xid
	a, err := tx.GetAuthorization(ctx, mid, xid)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, setproto.Errorf(setpb.Reason_UNKNOWN_TRANSACTION, "no authorization %s for merchant %q", xid, mid)
		}
		return nil, err
	}
	if c.kind == setpb.ContentKind_GATEWAY_INQUIRY_REQUEST {
		res.Transaction, err = transactionState(ctx, tx, a, true)
		return res, err
	}
	if a.Status == store.AuthDeclined {
		return nil, setproto.Errorf(setpb.Reason_INVALID_STATE, "authorization %s was declined", xid)
	}
	// Past its capture period an authorization can no longer be captured, reversed or
	// have captures reversed; what was captured can still be credited.
	expired := !now.Before(a.ExpiresAt)
	switch c.kind {
	case setpb.ContentKind_CAPTURE_REQUEST, setpb.ContentKind_AUTH_REVERSAL_REQUEST, setpb.ContentKind_CAPTURE_REVERSAL_REQUEST:
		if expired {
			return nil, setproto.Errorf(setpb.Reason_AUTH_EXPIRED, "authorization %s expired at %s", xid, a.ExpiresAt.UTC().Format(time.RFC3339))
		}
	default:
		if expired && a.CapturedTotal == 0 {
			return nil, setproto.Errorf(setpb.Reason_AUTH_EXPIRED, "authorization %s expired uncaptured at %s", xid, a.ExpiresAt.UTC().Format(time.RFC3339))
		}
	}
	type money interface {
		GetAmount() int64
		GetCurrency() string
	}
	m := c.req.(money)
	if m.GetCurrency() != a.Currency {
		return nil, setproto.Errorf(setpb.Reason_AMOUNT_MISMATCH, "currency %s, the authorization is in %s", m.GetCurrency(), a.Currency)
	}
	res.Amount, res.Currency, res.ItemId = m.GetAmount(), a.Currency, rrpid
	switch r := c.req.(type) {
	case *setpb.CaptureRequest:
		if c.token.GetTokenId() != a.CaptureTokenID || a.CaptureTokenID == "" {
			return nil, setproto.Errorf(setpb.Reason_TOKEN_MISMATCH, "the capture token is not the one issued for %s", xid)
		}
		if a.Status != store.AuthReversed && a.CapturedTotal+r.GetAmount() > a.AuthorizedAmount {
			return nil, setproto.Errorf(setpb.Reason_AMOUNT_EXCEEDED, "capture of %d on %s: %d of %d authorized already captured",
				r.GetAmount(), xid, a.CapturedTotal, a.AuthorizedAmount)
		}
		a, err = tx.InsertCapture(ctx, &store.Capture{MerchantID: mid, CaptureID: rrpid, XID: xid, Amount: r.GetAmount(),
			Currency: a.Currency, BatchID: r.GetBatchId(), CreatedAt: now})
	case *setpb.AuthReversalRequest:
		amount := r.GetAmount()
		if amount == 0 {
			amount = a.AuthorizedAmount - a.CapturedTotal
			if amount <= 0 || (a.Status != store.AuthAuthorized && a.Status != store.AuthPartiallyCaptured) {
				return nil, setproto.Errorf(setpb.Reason_INVALID_STATE, "authorization %s is %s with nothing left to reverse", xid, a.Status)
			}
		}
		res.Amount = amount
		a, err = tx.InsertReversal(ctx, &store.Reversal{MerchantID: mid, ReversalID: rrpid, XID: xid, Type: store.TxnAuthReversal,
			TargetID: xid, Amount: amount, Currency: a.Currency, CreatedAt: now})
	case *setpb.CaptureReversalRequest:
		a, err = tx.InsertReversal(ctx, &store.Reversal{MerchantID: mid, ReversalID: rrpid, XID: xid, Type: store.TxnCaptureReversal,
			TargetID: r.GetCaptureId(), Amount: r.GetAmount(), Currency: a.Currency, BatchID: r.GetBatchId(), CreatedAt: now})
	case *setpb.CreditRequest:
		a, err = tx.InsertCredit(ctx, &store.Credit{MerchantID: mid, CreditID: rrpid, XID: xid, Amount: r.GetAmount(),
			Currency: a.Currency, BatchID: r.GetBatchId(), CreatedAt: now})
	case *setpb.CreditReversalRequest:
		a, err = tx.InsertReversal(ctx, &store.Reversal{MerchantID: mid, ReversalID: rrpid, XID: xid, Type: store.TxnCreditReversal,
			TargetID: r.GetCreditId(), Amount: r.GetAmount(), Currency: a.Currency, BatchID: r.GetBatchId(), CreatedAt: now})
	}
	if err != nil {
		return nil, err
	}
	res.Transaction, err = transactionState(ctx, tx, a, false)
	return res, err
}

func (g *Gateway) batchAdmin(ctx context.Context, tx store.Tx, r *setpb.BatchAdminRequest, res *setpb.LifecycleResponse, now time.Time) error {
	mid, id := r.GetMerchantId(), r.GetBatchId()
	var err error
	switch r.GetAction() {
	case setpb.BatchAction_BATCH_OPEN:
		err = tx.OpenBatch(ctx, &store.Batch{MerchantID: mid, BatchID: id, OpenedAt: now})
	case setpb.BatchAction_BATCH_CLOSE:
		err = tx.CloseBatch(ctx, mid, id, now)
	}
	if errors.Is(err, store.ErrNotFound) {
		return setproto.Errorf(setpb.Reason_UNKNOWN_TRANSACTION, "no batch %s for merchant %q", id, mid)
	}
	if err != nil {
		return err
	}
	b, err := tx.GetBatch(ctx, mid, id)
	if errors.Is(err, store.ErrNotFound) {
		return setproto.Errorf(setpb.Reason_UNKNOWN_TRANSACTION, "no batch %s for merchant %q", id, mid)
	} else if err != nil {
		return err
	}
	totals, err := tx.BatchTotals(ctx, mid, id)
	if err != nil {
		return err
	}
	items, err := tx.ListBatchItems(ctx, mid, id)
	if err != nil {
		return err
	}
	bs := &setpb.BatchState{BatchId: id, Status: string(b.Status), OpenedUnix: b.OpenedAt.Unix(), ItemCount: b.ItemCount}
	if !b.ClosedAt.IsZero() {
		bs.ClosedUnix = b.ClosedAt.Unix()
	}
	for _, t := range totals {
		bs.Totals = append(bs.Totals, &setpb.BatchTotal{Currency: t.Currency, Type: string(t.Type), Count: t.Count, Amount: t.Amount})
	}
	for _, it := range items {
		bs.Items = append(bs.Items, &setpb.Item{Type: string(it.Type), Id: it.ID, Xid: it.XID, Amount: it.Amount,
			Currency: it.Currency, BatchId: id, TargetId: it.TargetID})
	}
	if len(bs.Items) > setproto.MaxItems {
		return setproto.Errorf(setpb.Reason_UNSUPPORTED, "batch %s has more than %d items", id, setproto.MaxItems)
	}
	res.Batch = bs
	return nil
}

// transactionState describes an authorization; with items, its captures, credits and
// reversals too (inquiries).
func transactionState(ctx context.Context, tx store.Tx, a *store.Authorization, items bool) (*setpb.TransactionState, error) {
	ts := &setpb.TransactionState{Xid: a.XID, Status: string(a.Status), Amount: a.Amount, AuthorizedAmount: a.AuthorizedAmount,
		CapturedTotal: a.CapturedTotal, CreditedTotal: a.CreditedTotal, Currency: a.Currency, ExpiresUnix: a.ExpiresAt.Unix(), AuthCode: a.AuthCode}
	if !items {
		return ts, nil
	}
	caps, err := tx.ListCaptures(ctx, a.MerchantID, a.XID)
	if err != nil {
		return nil, err
	}
	creds, err := tx.ListCredits(ctx, a.MerchantID, a.XID)
	if err != nil {
		return nil, err
	}
	revs, err := tx.ListReversals(ctx, a.MerchantID, a.XID)
	if err != nil {
		return nil, err
	}
	for _, c := range caps {
		ts.Items = append(ts.Items, &setpb.Item{Type: string(store.TxnCapture), Id: c.CaptureID, Xid: c.XID, Amount: c.Amount,
			Currency: c.Currency, BatchId: c.BatchID, ReversedAmount: c.ReversedAmount})
	}
	for _, c := range creds {
		ts.Items = append(ts.Items, &setpb.Item{Type: string(store.TxnCredit), Id: c.CreditID, Xid: c.XID, Amount: c.Amount,
			Currency: c.Currency, BatchId: c.BatchID, ReversedAmount: c.ReversedAmount})
	}
	for _, r := range revs {
		ts.Items = append(ts.Items, &setpb.Item{Type: string(r.Type), Id: r.ReversalID, Xid: r.XID, Amount: r.Amount,
			Currency: r.Currency, BatchId: r.BatchID, TargetId: r.TargetID})
	}
	if len(ts.Items) > setproto.MaxItems {
		return nil, setproto.Errorf(setpb.Reason_UNSUPPORTED, "transaction %s has more than %d items", a.XID, setproto.MaxItems)
	}
	return ts, nil
}
