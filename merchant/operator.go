package merchant

// The merchant operator's operations: capture, credit, the three reversals, batch
// administration, the gateway inquiry and the list of orders. `setpay merchant
// capture|credit|...` and the merchant console (merchant/console) both call these, so
// an action from either is the same request at the gateway.
//
// Retrying is safe: every request that changes something has a pair ID
// (OperatorRRPID) derived from the merchant, the kind, the XID (or batch) and a
// request ID, by default the request's own parameters. The same request made again
// (the same command run twice, a form submitted twice) is the same pair at the
// gateway, which answers with its first answer and changes nothing. A second,
// distinct request with the same parameters (a second capture of the same amount)
// needs its own request ID. Queries (inquiry, batch list) take a fresh pair ID each
// time.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
)

// AmountRule says what an operation does when no amount is given (0).
type AmountRule int

const (
	AmountRequired     AmountRule = iota // an amount must be given
	AmountOrderTotal                     // default: the order's amount
	AmountZeroMeansAll                   // default 0: everything not captured
)

// Operation is one of the operator's lifecycle requests on a purchase.
type Operation struct {
	Name   string // capture, credit, reverse-auth, reverse-capture, reverse-credit
	Kind   setpb.ContentKind
	Amount AmountRule
	// Target is what a reversal undoes ("capture" or "credit"; "" for none): the
	// request's TargetID names it by its pair ID.
	Target string
	Batch  bool // the item may go into an open batch
	send   func(m *Merchant, ctx context.Context, in LifecycleInput) (*LifecycleResult, error)
}

// The operations.
var (
	OpCapture = Operation{Name: "capture", Kind: setpb.ContentKind_CAPTURE_REQUEST, Amount: AmountOrderTotal, Batch: true,
		send: (*Merchant).Capture}
	OpCredit = Operation{Name: "credit", Kind: setpb.ContentKind_CREDIT_REQUEST, Amount: AmountRequired, Batch: true,
		send: (*Merchant).Credit}
	OpReverseAuth = Operation{Name: "reverse-auth", Kind: setpb.ContentKind_AUTH_REVERSAL_REQUEST, Amount: AmountZeroMeansAll,
		send: (*Merchant).ReverseAuthorization}
	OpReverseCapture = Operation{Name: "reverse-capture", Kind: setpb.ContentKind_CAPTURE_REVERSAL_REQUEST, Amount: AmountRequired,
		Target: "capture", Batch: true, send: (*Merchant).ReverseCapture}
	OpReverseCredit = Operation{Name: "reverse-credit", Kind: setpb.ContentKind_CREDIT_REVERSAL_REQUEST, Amount: AmountRequired,
		Target: "credit", Batch: true, send: (*Merchant).ReverseCredit}
)

// Operations are the lifecycle operations, in the order an operator meets them.
func Operations() []Operation {
	return []Operation{OpCapture, OpCredit, OpReverseAuth, OpReverseCapture, OpReverseCredit}
}

// OperationByName is the operation called name.
func OperationByName(name string) (Operation, bool) {
	for _, op := range Operations() {
		if op.Name == name {
			return op, true
		}
	}
	return Operation{}, false
}

// OperatorRequest is one operator request on a purchase.
type OperatorRequest struct {
	XID string
	// Amount in the order currency's minor units; 0: the operation's default
	// (Operation.Amount).
	Amount   int64
	BatchID  string // an open batch for the item, optional
	TargetID string // the capture or credit a reversal undoes: its pair ID
	// RequestID names the request for retries; "" derives it from the amount, batch
	// and target, so the same request made again changes nothing.
	RequestID string
}

// InputError is an operator request refused before anything is sent: the field at
// fault and the problem, in words.
type InputError struct {
	Field   string // xid, amount, batch, target, request_id, state, limit
	Problem string
	Err     error
}

func (e *InputError) Error() string { return e.Field + ": " + e.Problem }
func (e *InputError) Unwrap() error { return e.Err }

// ErrRequired is the problem of an identifier left empty.
var ErrRequired = errors.New("required")

// CheckID checks an operator-given identifier (an XID, batch, request or item ID) the
// way the protocol checks it: 1..64 characters of [A-Za-z0-9._-]. It returns
// ErrRequired for an empty one.
func CheckID(v string) error {
	if v == "" {
		return ErrRequired
	}
	if len(v) > setproto.MaxIDLen {
		return fmt.Errorf("want 1..%d characters of [A-Za-z0-9._-], got %d characters", setproto.MaxIDLen, len(v))
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("want 1..%d characters of [A-Za-z0-9._-], got %q", setproto.MaxIDLen, v)
		}
	}
	return nil
}

// ParseAmount reads an amount typed by an operator: a positive integer of minor
// units (or 0 where allow0).
func ParseAmount(v string, allow0 bool) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		hint := ""
		if strings.ContainsAny(v, ".,") {
			hint = " (4990 for 49.90)"
		}
		return 0, fmt.Errorf("want an integer number of minor units%s, got %q", hint, v)
	}
	switch {
	case n < 0 || n == 0 && !allow0:
		return 0, fmt.Errorf("must be positive, got %d", n)
	case n > setproto.MaxAmount:
		return 0, fmt.Errorf("at most %d minor units, got %d", setproto.MaxAmount, n)
	}
	return n, nil
}

// Check refuses a request op cannot send, naming the field.
func (op Operation) Check(r OperatorRequest) error {
	idField := func(field, v string, required bool) error {
		if v == "" && !required {
			return nil
		}
		if err := CheckID(v); err != nil {
			return &InputError{Field: field, Problem: err.Error(), Err: err}
		}
		return nil
	}
	if err := idField("xid", r.XID, true); err != nil {
		return err
	}
	switch {
	case r.Amount < 0:
		return &InputError{Field: "amount", Problem: fmt.Sprintf("must be positive, got %d", r.Amount)}
	case r.Amount > setproto.MaxAmount:
		return &InputError{Field: "amount", Problem: fmt.Sprintf("at most %d minor units, got %d", setproto.MaxAmount, r.Amount)}
	case r.Amount == 0 && op.Amount == AmountRequired:
		return &InputError{Field: "amount", Problem: "required", Err: ErrRequired}
	}
	if r.BatchID != "" && !op.Batch {
		return &InputError{Field: "batch", Problem: op.Name + " takes no batch"}
	}
	if err := idField("batch", r.BatchID, false); err != nil {
		return err
	}
	if op.Target == "" && r.TargetID != "" {
		return &InputError{Field: "target", Problem: op.Name + " undoes no item"}
	}
	if err := idField("target", r.TargetID, op.Target != ""); err != nil {
		return err
	}
	return idField("request_id", r.RequestID, false)
}

// Operate sends op for r to the gateway: with the order's amount where op defaults
// to it, and the pair ID OperatorRRPID of the request ID (given, or derived from the
// amount, batch and target). The outcome is what the gateway's signed answer
// (verified, opened with the merchant's key-exchange key) says.
func (m *Merchant) Operate(ctx context.Context, op Operation, r OperatorRequest) (*Outcome, error) {
	if op.send == nil {
		return nil, fmt.Errorf("merchant: unknown operation %q", op.Name)
	}
	if err := op.Check(r); err != nil {
		return nil, err
	}
	in := LifecycleInput{XID: r.XID, Amount: r.Amount, BatchID: r.BatchID, TargetID: r.TargetID}
	if in.Amount == 0 && op.Amount == AmountOrderTotal {
		o, err := m.order(ctx, in.XID)
		if err != nil {
			return nil, err
		}
		in.Amount = o.Amount
	}
	rid := r.RequestID
	if rid == "" {
		// ';' and '=' are refused in a given request ID, so a derived ID is never one given.
		rid = fmt.Sprintf("amount=%d;batch=%s;target=%s", in.Amount, in.BatchID, in.TargetID)
	}
	in.RRPID = OperatorRRPID(m.ID(), op.Kind, in.XID, rid)
	res, err := op.send(m, ctx, in)
	if err != nil {
		return nil, err
	}
	out := NewOutcome(op.Name, rid, res)
	return &out, nil
}

// BatchVerb is the operator's word for a batch action: open, close or list.
func BatchVerb(a setpb.BatchAction) string {
	switch a {
	case setpb.BatchAction_BATCH_OPEN:
		return "open"
	case setpb.BatchAction_BATCH_CLOSE:
		return "close"
	}
	return "list"
}

// OperateBatch opens, closes or lists a settlement batch at the gateway. Opening and
// closing are retried safely (their pair ID follows the batch); listing reads the
// state now.
func (m *Merchant) OperateBatch(ctx context.Context, action setpb.BatchAction, batchID string) (*Outcome, error) {
	if err := CheckID(batchID); err != nil {
		return nil, &InputError{Field: "batch", Problem: err.Error(), Err: err}
	}
	verb := BatchVerb(action)
	rrpid := ""
	if action != setpb.BatchAction_BATCH_QUERY {
		rrpid = OperatorRRPID(m.ID(), setpb.ContentKind_BATCH_ADMIN_REQUEST, batchID, verb)
	}
	res, err := m.Batch(ctx, rrpid, batchID, action)
	if err != nil {
		return nil, err
	}
	out := NewOutcome("batch "+verb, "", res)
	return &out, nil
}

// OperatorInquiry asks the gateway for the state of purchase xid with its items. A
// query changes nothing: a fresh pair ID each time, so it reads the state now.
func (m *Merchant) OperatorInquiry(ctx context.Context, xid string) (*Outcome, error) {
	if err := CheckID(xid); err != nil {
		return nil, &InputError{Field: "xid", Problem: err.Error(), Err: err}
	}
	res, err := m.GatewayInquiry(ctx, "", xid)
	if err != nil {
		return nil, err
	}
	out := NewOutcome("inquiry", "", res)
	return &out, nil
}

// OrderStates are the states an order can be listed by.
var OrderStates = []store.OrderState{StatePending, store.OrderAuthorized, store.OrderCaptured, store.OrderRefunded,
	StateReversed, StateDeclined, StateRefused}

// ListOrders lists the merchant's orders in db, newest first, at most limit, only
// those in state unless it is "". It needs no token and no gateway.
func ListOrders(ctx context.Context, db store.DB, state store.OrderState, limit int) ([]OrderSummary, error) {
	if limit <= 0 {
		return nil, &InputError{Field: "limit", Problem: fmt.Sprintf("must be positive, got %d", limit)}
	}
	if state != "" {
		if err := CheckID(string(state)); err != nil {
			return nil, &InputError{Field: "state", Problem: err.Error(), Err: err}
		}
	}
	var orders []store.Order
	if err := db.View(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		orders, err = tx.ListOrders(ctx, state, limit)
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]OrderSummary, 0, len(orders))
	for _, o := range orders {
		out = append(out, summary(o))
	}
	return out, nil
}

// Orders lists the merchant's orders (ListOrders on its store).
func (m *Merchant) Orders(ctx context.Context, state store.OrderState, limit int) ([]OrderSummary, error) {
	return ListOrders(ctx, m.cfg.Store, state, limit)
}

// Order is one of the merchant's orders; a setproto error UNKNOWN_TRANSACTION when
// there is none.
func (m *Merchant) Order(ctx context.Context, xid string) (*OrderSummary, error) {
	if err := CheckID(xid); err != nil {
		return nil, &InputError{Field: "xid", Problem: err.Error(), Err: err}
	}
	o, err := m.order(ctx, xid)
	if err != nil {
		return nil, err
	}
	s := summary(*o)
	return &s, nil
}

// summary is what an operator sees of an order. The merchant never holds a card
// number: an order is its XID, offer, amount and state (the cardholder's
// certificate thumbprint stays in the store).
func summary(o store.Order) OrderSummary {
	return OrderSummary{XID: o.XID, OrderID: o.MerchantOrderID, State: string(o.State), Amount: o.Amount,
		Currency: o.Currency, Created: o.CreatedAt.UTC().Format(time.RFC3339), Updated: o.UpdatedAt.UTC().Format(time.RFC3339)}
}

// OrderSummary is an order as the operator sees it (and `merchant orders --json`
// prints it).
type OrderSummary struct {
	XID      string `json:"xid"`
	OrderID  string `json:"order_id"` // offer/XID
	State    string `json:"state"`
	Amount   int64  `json:"amount"` // minor units
	Currency string `json:"currency"`
	Created  string `json:"created"`
	Updated  string `json:"updated"`
}

// Outcome is the outcome of an operator request: what the gateway's signed answer
// (verified, opened with the merchant's key-exchange key) says.
type Outcome struct {
	Operation string `json:"operation"`
	RequestID string `json:"request_id,omitempty"`
	RRPID     string `json:"rrpid"`
	XID       string `json:"xid,omitempty"`
	ItemID    string `json:"item_id,omitempty"` // the capture, credit or reversal recorded (= rrpid)
	Amount    int64  `json:"amount"`            // what the request moved, minor units
	Currency  string `json:"currency,omitempty"`
	// Answered is when the gateway signed the answer; a retry answered from the
	// gateway's record shows the first answer's time (and the state then).
	Answered    string            `json:"answered"`
	Transaction *TransactionState `json:"transaction,omitempty"`
	Batch       *BatchState       `json:"batch,omitempty"`
}

// TransactionState is a purchase's state at the gateway.
type TransactionState struct {
	XID              string `json:"xid"`
	Status           string `json:"status"`
	Amount           int64  `json:"amount"`
	AuthorizedAmount int64  `json:"authorized_amount"`
	CapturedTotal    int64  `json:"captured_total"`
	CreditedTotal    int64  `json:"credited_total"`
	Currency         string `json:"currency"`
	AuthCode         string `json:"auth_code,omitempty"`
	Expires          string `json:"expires,omitempty"`
	Items            []Item `json:"items"`
}

// Item is a capture, credit or reversal at the gateway.
type Item struct {
	Type           string `json:"type"`
	ID             string `json:"id"`
	XID            string `json:"xid,omitempty"`
	Amount         int64  `json:"amount"`
	Currency       string `json:"currency"`
	BatchID        string `json:"batch_id,omitempty"`
	ReversedAmount int64  `json:"reversed_amount,omitempty"`
	TargetID       string `json:"target_id,omitempty"`
}

// BatchState is a settlement batch at the gateway.
type BatchState struct {
	BatchID   string       `json:"batch_id"`
	Status    string       `json:"status"`
	Opened    string       `json:"opened,omitempty"`
	Closed    string       `json:"closed,omitempty"`
	ItemCount int64        `json:"item_count"`
	Totals    []BatchTotal `json:"totals"`
	Items     []Item       `json:"items"`
}

// BatchTotal is a batch's count and sum of one item type in one currency.
type BatchTotal struct {
	Currency string `json:"currency"`
	Type     string `json:"type"`
	Count    int64  `json:"count"`
	Amount   int64  `json:"amount"`
}

func unixTime(s int64) string {
	if s == 0 {
		return ""
	}
	return time.Unix(s, 0).UTC().Format(time.RFC3339)
}

func items(in []*setpb.Item) []Item {
	out := make([]Item, 0, len(in))
	for _, it := range in {
		out = append(out, Item{Type: it.GetType(), ID: it.GetId(), XID: it.GetXid(), Amount: it.GetAmount(), Currency: it.GetCurrency(),
			BatchID: it.GetBatchId(), ReversedAmount: it.GetReversedAmount(), TargetID: it.GetTargetId()})
	}
	return out
}

// NewOutcome is the outcome of operation op (request ID requestID) the gateway
// answered with res.
func NewOutcome(op, requestID string, res *LifecycleResult) Outcome {
	r := res.Response
	out := Outcome{Operation: op, RequestID: requestID, RRPID: r.GetRrpid(), XID: r.GetXid(), ItemID: r.GetItemId(),
		Amount: r.GetAmount(), Currency: r.GetCurrency(), Answered: res.Answered.UTC().Format(time.RFC3339)}
	if t := r.GetTransaction(); t != nil {
		out.Transaction = &TransactionState{XID: t.GetXid(), Status: t.GetStatus(), Amount: t.GetAmount(), AuthorizedAmount: t.GetAuthorizedAmount(),
			CapturedTotal: t.GetCapturedTotal(), CreditedTotal: t.GetCreditedTotal(), Currency: t.GetCurrency(), AuthCode: t.GetAuthCode(),
			Expires: unixTime(t.GetExpiresUnix()), Items: items(t.GetItems())}
	}
	if b := r.GetBatch(); b != nil {
		bs := &BatchState{BatchID: b.GetBatchId(), Status: b.GetStatus(), Opened: unixTime(b.GetOpenedUnix()), Closed: unixTime(b.GetClosedUnix()),
			ItemCount: b.GetItemCount(), Totals: []BatchTotal{}, Items: items(b.GetItems())}
		for _, t := range b.GetTotals() {
			bs.Totals = append(bs.Totals, BatchTotal{Currency: t.GetCurrency(), Type: t.GetType(), Count: t.GetCount(), Amount: t.GetAmount()})
		}
		out.Batch = bs
	}
	return out
}
