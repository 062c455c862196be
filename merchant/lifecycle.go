package merchant

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
)

// Order states after authorization.
const (
	StateReversed store.OrderState = "reversed" // the authorization was reversed in full
)

// LifecycleInput names one lifecycle operation on a purchase.
type LifecycleInput struct {
	// RRPID is the request/response pair ID. Retrying an operation must reuse it:
	// the gateway answers the same request with the same bytes and refuses another
	// request under a used ID. Empty: a fresh one is chosen.
	RRPID    string
	XID      string
	Amount   int64  // minor units in the order's currency; 0 on an authorization reversal means all
	BatchID  string // optional open batch for captures, credits and their reversals
	TargetID string // the capture (capture reversal) or credit (credit reversal) to undo: its RRPID
}

// LifecycleResult is the gateway's verified answer.
type LifecycleResult struct {
	Response *setpb.LifecycleResponse
	// Envelope is the answer as received: the gateway stores these bytes and
	// sends them again on a retry.
	Envelope []byte
	// Answered is when the gateway signed the answer: on a retry answered from the
	// gateway's record, the time of the first answer.
	Answered time.Time
}

// operatorRRPIDContext separates operator pair IDs from every other hash.
const operatorRRPIDContext = "setpay merchant operator rrpid v1\x00"

// OperatorRRPID is the pair ID of an operator's lifecycle request: base64url of 16
// bytes of SHA-256 over the merchant, the request kind, its XID (or batch) and the
// operator's request ID. The same request run again, from another process, after a
// restart or on another replica, is then the same pair at the gateway, which answers
// with its first answer and changes nothing; the same request ID for a different
// request (another amount, say) is refused as a REPLAY. It depends on no key, so a
// retry is recognised across a key rotation too; the gateway scopes pair IDs by
// merchant, so their being predictable lets nobody else use them.
func OperatorRRPID(merchantID string, kind setpb.ContentKind, subject, requestID string) string {
	h := setproto.Hash([]byte(operatorRRPIDContext + merchantID + "\x00" + kind.String() + "\x00" + subject + "\x00" + requestID))
	return base64.RawURLEncoding.EncodeToString(h[:16])
}

// Capture captures in.Amount of an authorized purchase with the capture token the
// gateway issued with its authorization.
func (m *Merchant) Capture(ctx context.Context, in LifecycleInput) (*LifecycleResult, error) {
	o, err := m.order(ctx, in.XID)
	if err != nil {
		return nil, err
	}
	if len(o.CaptureToken) == 0 {
		return nil, setproto.Errorf(setpb.Reason_INVALID_STATE, "purchase %s has no capture token (state %s)", in.XID, o.State)
	}
	return m.SendLifecycle(ctx, &setpb.CaptureRequest{Xid: in.XID, Rrpid: in.RRPID, Amount: in.Amount, Currency: o.Currency,
		CaptureToken: o.CaptureToken, BatchId: in.BatchID})
}

// ReverseAuthorization lowers the authorized amount by in.Amount (0: all not captured).
func (m *Merchant) ReverseAuthorization(ctx context.Context, in LifecycleInput) (*LifecycleResult, error) {
	o, err := m.order(ctx, in.XID)
	if err != nil {
		return nil, err
	}
	return m.SendLifecycle(ctx, &setpb.AuthReversalRequest{Xid: in.XID, Rrpid: in.RRPID, Amount: in.Amount, Currency: o.Currency})
}

// ReverseCapture undoes in.Amount of the capture in.TargetID.
func (m *Merchant) ReverseCapture(ctx context.Context, in LifecycleInput) (*LifecycleResult, error) {
	o, err := m.order(ctx, in.XID)
	if err != nil {
		return nil, err
	}
	return m.SendLifecycle(ctx, &setpb.CaptureReversalRequest{Xid: in.XID, Rrpid: in.RRPID, CaptureId: in.TargetID,
		Amount: in.Amount, Currency: o.Currency, BatchId: in.BatchID})
}

// Credit refunds in.Amount of what was captured.
func (m *Merchant) Credit(ctx context.Context, in LifecycleInput) (*LifecycleResult, error) {
	o, err := m.order(ctx, in.XID)
	if err != nil {
		return nil, err
	}
	return m.SendLifecycle(ctx, &setpb.CreditRequest{Xid: in.XID, Rrpid: in.RRPID, Amount: in.Amount, Currency: o.Currency, BatchId: in.BatchID})
}

// ReverseCredit undoes in.Amount of the credit in.TargetID.
func (m *Merchant) ReverseCredit(ctx context.Context, in LifecycleInput) (*LifecycleResult, error) {
	o, err := m.order(ctx, in.XID)
	if err != nil {
		return nil, err
	}
	return m.SendLifecycle(ctx, &setpb.CreditReversalRequest{Xid: in.XID, Rrpid: in.RRPID, CreditId: in.TargetID,
		Amount: in.Amount, Currency: o.Currency, BatchId: in.BatchID})
}

// Batch opens, closes or queries a settlement batch at the gateway.
func (m *Merchant) Batch(ctx context.Context, rrpid, batchID string, action setpb.BatchAction) (*LifecycleResult, error) {
	return m.SendLifecycle(ctx, &setpb.BatchAdminRequest{BatchId: batchID, Rrpid: rrpid, Action: action})
}

// GatewayInquiry asks the gateway for the state of a transaction, with its items.
func (m *Merchant) GatewayInquiry(ctx context.Context, rrpid, xid string) (*LifecycleResult, error) {
	return m.SendLifecycle(ctx, &setpb.GatewayInquiryRequest{Xid: xid, Rrpid: rrpid})
}

func (m *Merchant) order(ctx context.Context, xid string) (*store.Order, error) {
	var o *store.Order
	err := m.cfg.Store.View(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		o, err = tx.GetOrder(ctx, xid)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, setproto.Errorf(setpb.Reason_UNKNOWN_TRANSACTION, "no purchase %s", xid)
	}
	if err != nil {
		return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "read order")
	}
	return o, nil
}

// SendLifecycle signs req with the merchant's token key (filling in the merchant id,
// its key-exchange certificate and, when empty, a fresh pair ID), envelopes it to
// the gateway, sends it and verifies the answer: enveloped to us, signed by our
// gateway, echoing the kind, pair ID, merchant, XID or batch and amount. The order
// follows the transaction's new state, in the transaction that audits the key
// operations.
func (m *Merchant) SendLifecycle(ctx context.Context, req setproto.LifecycleRequest) (*LifecycleResult, error) {
	res, err := m.sendLifecycle(ctx, req)
	kind, xid := setproto.KindOf(req).String(), ""
	if x, ok := req.(interface{ GetXid() string }); ok {
		xid = x.GetXid()
	}
	if err != nil {
		m.cfg.Logger.Warn("lifecycle refused", "kind", kind, "xid", xid, "rrpid", req.GetRrpid(), "result", "REFUSED",
			"reason", setproto.ReasonOf(err).String(), "err", err)
		return nil, err
	}
	m.cfg.Logger.Info("lifecycle", "kind", kind, "xid", xid, "rrpid", req.GetRrpid(), "result", "OK")
	return res, nil
}

func (m *Merchant) sendLifecycle(ctx context.Context, req setproto.LifecycleRequest) (*LifecycleResult, error) {
	kind := setproto.KindOf(req)
	if err := m.fill(req); err != nil {
		return nil, err
	}
	if err := setproto.ValidateLifecycleRequest(req); err != nil {
		return nil, err
	}
	res, err := m.callLifecycle(ctx, kind, req, !m.gatewayHasCerts.Load())
	if err != nil && setproto.ReasonOf(err) == setpb.Reason_CERT_UNKNOWN && m.gatewayHasCerts.Load() {
		res, err = m.callLifecycle(ctx, kind, req, true) // the gateway restarted: certificates again
	}
	if err != nil {
		return nil, err
	}
	m.gatewayHasCerts.Store(true)
	if err := m.recordLifecycle(ctx, kind, req, res.Response); err != nil {
		return nil, setproto.Wrap(setpb.Reason_INTERNAL, err, "record %s", kind)
	}
	return res, nil
}

func (m *Merchant) fill(req setproto.LifecycleRequest) error {
	r := req.ProtoReflect()
	fields := r.Descriptor().Fields()
	set := func(name string, v protoreflect.Value) {
		if f := fields.ByName(protoreflect.Name(name)); f != nil && !r.Has(f) {
			r.Set(f, v)
		}
	}
	if req.GetRrpid() == "" {
		id, err := setproto.NewID()
		if err != nil {
			return err
		}
		set("rrpid", protoreflect.ValueOfString(id))
	}
	set("merchant_id", protoreflect.ValueOfString(m.id))
	set("merchant_kx_thumbprint", protoreflect.ValueOfBytes(thumb(m.cfg.KXCert)))
	return nil
}

// rpc picks the gateway method of a lifecycle kind.
func (m *Merchant) rpc(kind setpb.ContentKind) func(context.Context, *setpb.Enveloped, ...grpc.CallOption) (*setpb.Enveloped, error) {
	g := m.cfg.Gateway
	switch kind {
	case setpb.ContentKind_CAPTURE_REQUEST:
		return g.Capture
	case setpb.ContentKind_AUTH_REVERSAL_REQUEST:
		return g.AuthReversal
	case setpb.ContentKind_CAPTURE_REVERSAL_REQUEST:
		return g.CaptureReversal
	case setpb.ContentKind_CREDIT_REQUEST:
		return g.Credit
	case setpb.ContentKind_CREDIT_REVERSAL_REQUEST:
		return g.CreditReversal
	case setpb.ContentKind_BATCH_ADMIN_REQUEST:
		return g.BatchAdmin
	}
	return g.Inquiry
}

func (m *Merchant) callLifecycle(ctx context.Context, kind setpb.ContentKind, req setproto.LifecycleRequest, embed bool) (*LifecycleResult, error) {
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
	signed, err := setproto.SignMessage(kind, req, m.cfg.Sign, now, certs)
	if err != nil {
		return nil, err
	}
	sealed, err := setproto.Seal(kind, signed, m.cfg.GatewayKX, m.cfg.Envelope)
	if err != nil {
		return nil, err
	}
	out, err := m.rpc(kind)(ctx, &setpb.Enveloped{Cms: sealed, CertRefs: refs})
	if err != nil {
		return nil, &setproto.Error{Reason: setproto.ReasonOf(err), Msg: "gateway", Err: err}
	}
	v, err := m.openGatewayAnswer(ctx, out, setpb.ContentKind_LIFECYCLE_RESPONSE)
	if err != nil {
		return nil, err
	}
	r, err := setproto.ParseLifecycleResponse(v.Content)
	if err != nil {
		return nil, gatewayFault(err)
	}
	if err := echoes(kind, req, r); err != nil {
		return nil, gatewayFault(err)
	}
	return &LifecycleResult{Response: r, Envelope: out.GetCms(), Answered: v.SigningTime}, nil
}

// echoes checks that an answer is for this request.
func echoes(kind setpb.ContentKind, req setproto.LifecycleRequest, r *setpb.LifecycleResponse) error {
	bad := func(what string) error {
		return setproto.Errorf(setpb.Reason_CHALLENGE_MISMATCH, "the gateway's answer is not for this request: %s", what)
	}
	if r.GetRequestKind() != kind || r.GetRrpid() != req.GetRrpid() || r.GetMerchantId() != req.GetMerchantId() {
		return bad("kind, pair ID or merchant")
	}
	if b, ok := req.(*setpb.BatchAdminRequest); ok {
		if r.GetBatch().GetBatchId() != b.GetBatchId() {
			return bad("batch")
		}
		return nil
	}
	x := req.(interface{ GetXid() string }).GetXid()
	if r.GetXid() != x || r.GetTransaction().GetXid() != x {
		return bad("XID")
	}
	if a, ok := req.(interface{ GetAmount() int64 }); ok && a.GetAmount() != 0 && a.GetAmount() != r.GetAmount() {
		return bad("amount")
	}
	return nil
}

// recordLifecycle moves the order to the state the gateway reports and audits the
// merchant's key operations (signing the request, opening the answer).
func (m *Merchant) recordLifecycle(ctx context.Context, kind setpb.ContentKind, req setproto.LifecycleRequest, r *setpb.LifecycleResponse) error {
	now := m.cfg.Clock()
	return m.cfg.Store.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		for _, op := range []store.AuditRecord{
			{Purpose: "sign " + kind.String(), KeyURI: setproto.KeyURI(m.cfg.Sign.Key), Details: req.GetRrpid()},
			{Purpose: "decrypt LIFECYCLE_RESPONSE", KeyURI: setproto.KeyURI(m.cfg.KXKey), Details: req.GetRrpid()},
		} {
			op.Time, op.Actor, op.XID = now, "merchant:"+m.id, r.GetXid()
			if _, err := tx.AppendAudit(ctx, op); err != nil {
				return err
			}
		}
		t := r.GetTransaction()
		if t == nil {
			return nil
		}
		o, err := tx.GetOrder(ctx, t.GetXid())
		if errors.Is(err, store.ErrNotFound) {
			return nil // authorized outside this merchant's purchase flow
		} else if err != nil {
			return err
		}
		to := orderState(t)
		if to == "" || to == o.State {
			return nil
		}
		if err := tx.SetOrderState(ctx, o.XID, o.State, to, now); err != nil {
			return fmt.Errorf("order %s: %w", o.XID, err)
		}
		return nil
	})
}

func orderState(t *setpb.TransactionState) store.OrderState {
	switch store.AuthStatus(t.GetStatus()) {
	case store.AuthAuthorized:
		return store.OrderAuthorized
	case store.AuthPartiallyCaptured, store.AuthCaptured:
		if t.GetCreditedTotal() > 0 && t.GetCreditedTotal() == t.GetCapturedTotal() {
			return store.OrderRefunded
		}
		return store.OrderCaptured
	case store.AuthReversed:
		return StateReversed
	}
	return ""
}
