package main

// The merchant's operator commands: capture, credit, the three reversals, batch
// administration and the gateway inquiry, each a signed and enveloped request to the
// gateway from the merchant's token keys, and the list of the merchant's orders. Each
// opens what the merchant's configuration names, exactly as `merchant serve` does
// (openMerchant), and runs next to a running `merchant serve` on the same store:
// SQLite write transactions take the write lock at BEGIN and wait on busy_timeout,
// PostgreSQL serializes them itself.
//
// Amounts are integers in the currency's minor units, as in the protocol and in the
// configuration's offers (4990 is 49.90 EUR).
//
// Retrying is safe: every request that changes something has a pair ID
// (merchant.OperatorRRPID) derived from the merchant, the kind, the XID (or batch)
// and a request ID, by default the request's own parameters. The same command run
// again is the same request at the gateway, which answers it with its first answer
// and changes nothing. A second, distinct request with the same parameters (a second
// capture of the same amount) needs its own --request-id. Queries (inquiry, batch
// list) take a fresh pair ID each time.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
)

// withMerchantOperatorCommands adds the operator commands to the `setpay merchant`
// subcommands (register, serve).
func withMerchantOperatorCommands(sub map[string]*command) map[string]*command {
	for name, c := range merchantOperatorCommands() {
		sub[name] = c
	}
	return sub
}

// merchantOperatorCommands are the `setpay merchant` subcommands besides register and
// serve.
func merchantOperatorCommands() map[string]*command {
	return map[string]*command{
		"capture":         {summary: "capture an authorized purchase (all or part) at the gateway", run: lifecycleCmd(opCapture)},
		"credit":          {summary: "refund part or all of what was captured", run: lifecycleCmd(opCredit)},
		"reverse-auth":    {summary: "reverse an authorization (all not captured, or part)", run: lifecycleCmd(opReverseAuth)},
		"reverse-capture": {summary: "undo all or part of one capture", run: lifecycleCmd(opReverseCapture)},
		"reverse-credit":  {summary: "undo all or part of one credit", run: lifecycleCmd(opReverseCredit)},
		"inquiry":         {summary: "ask the gateway for the state of a purchase, with its captures, credits and reversals", run: runMerchantInquiry},
		"orders":          {summary: "list the merchant's orders with their state and amount", run: runMerchantOrders},
		"batch": {summary: "settlement batches at the gateway", sub: map[string]*command{
			"open":  {summary: "open a settlement batch", run: batchCmd(setpb.BatchAction_BATCH_OPEN)},
			"close": {summary: "close a settlement batch and show its totals", run: batchCmd(setpb.BatchAction_BATCH_CLOSE)},
			"list":  {summary: "list a settlement batch's state, totals and items", run: batchCmd(setpb.BatchAction_BATCH_QUERY)},
		}},
	}
}

// gatewayTimeout bounds an operator command's request to the gateway. Running the
// command again is safe: the same request is answered from the gateway's record.
const gatewayTimeout = time.Minute

// amountRule says what a command does without --amount.
type amountRule int

const (
	amountRequired     amountRule = iota
	amountOrderTotal              // default: the order's amount
	amountZeroMeansAll            // default 0: everything not captured
)

// lifecycleOp is one lifecycle operator command.
type lifecycleOp struct {
	name   string
	kind   setpb.ContentKind
	amount amountRule
	target string // the flag naming the item to undo ("" for none)
	batch  bool   // takes --batch
	send   func(m *merchant.Merchant, ctx context.Context, in merchant.LifecycleInput) (*merchant.LifecycleResult, error)
}

var (
	opCapture = lifecycleOp{name: "capture", kind: setpb.ContentKind_CAPTURE_REQUEST, amount: amountOrderTotal, batch: true,
		send: (*merchant.Merchant).Capture}
	opCredit = lifecycleOp{name: "credit", kind: setpb.ContentKind_CREDIT_REQUEST, amount: amountRequired, batch: true,
		send: (*merchant.Merchant).Credit}
	opReverseAuth = lifecycleOp{name: "reverse-auth", kind: setpb.ContentKind_AUTH_REVERSAL_REQUEST, amount: amountZeroMeansAll,
		send: (*merchant.Merchant).ReverseAuthorization}
	opReverseCapture = lifecycleOp{name: "reverse-capture", kind: setpb.ContentKind_CAPTURE_REVERSAL_REQUEST, amount: amountRequired,
		target: "capture-id", batch: true, send: (*merchant.Merchant).ReverseCapture}
	opReverseCredit = lifecycleOp{name: "reverse-credit", kind: setpb.ContentKind_CREDIT_REVERSAL_REQUEST, amount: amountRequired,
		target: "credit-id", batch: true, send: (*merchant.Merchant).ReverseCredit}
)

// checkCLIID checks an identifier given on the command line the way the protocol
// checks it (1..64 characters of [A-Za-z0-9._-]).
func checkCLIID(flagName, v string) error {
	if v == "" {
		return usageErrorf("--%s is required", flagName)
	}
	if len(v) > setproto.MaxIDLen {
		return usageErrorf("--%s: want 1..%d characters of [A-Za-z0-9._-], got %d characters", flagName, setproto.MaxIDLen, len(v))
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return usageErrorf("--%s: want 1..%d characters of [A-Za-z0-9._-], got %q", flagName, setproto.MaxIDLen, v)
		}
	}
	return nil
}

// parseAmount reads --amount: a positive integer of minor units (or 0 where allow0).
func parseAmount(v string, allow0 bool) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		hint := ""
		if strings.ContainsAny(v, ".,") {
			hint = " (4990 for 49.90)"
		}
		return 0, usageErrorf("--amount: want an integer number of minor units%s, got %q", hint, v)
	}
	switch {
	case n < 0 || n == 0 && !allow0:
		return 0, usageErrorf("--amount: must be positive, got %d", n)
	case n > setproto.MaxAmount:
		return 0, usageErrorf("--amount: at most %d minor units, got %d", setproto.MaxAmount, n)
	}
	return n, nil
}

// opFlags are the flags every merchant operator command takes.
type opFlags struct {
	config string
	json   bool
}

func opFlagsOn(fs *flagSet) *opFlags {
	f := &opFlags{}
	fs.StringVar(&f.config, "config", "merchant.yaml", "the merchant's configuration file, as for merchant serve")
	fs.BoolVar(&f.json, "json", false, "print the outcome as JSON")
	return f
}

// openOperatorMerchant loads the configuration and opens the merchant.
func openOperatorMerchant(ctx context.Context, env *cliEnv, path string) (*merchantParty, error) {
	var cfg merchantConfig
	if err := loadConfig(path, &cfg); err != nil {
		return nil, err
	}
	return openMerchant(ctx, env, &cfg)
}

func lifecycleCmd(op lifecycleOp) func(ctx context.Context, env *cliEnv, args []string) error {
	return func(ctx context.Context, env *cliEnv, args []string) error {
		return runLifecycle(ctx, env, args, op)
	}
}

func runLifecycle(ctx context.Context, env *cliEnv, args []string, op lifecycleOp) error {
	fs := newFlags("setpay merchant "+op.name, env)
	of := opFlagsOn(fs)
	xid := fs.String("xid", "", "the purchase's transaction ID (XID), as merchant orders lists it (required)")
	amountHelp := "amount in the order currency's minor units, an integer (4990 for 49.90)"
	switch op.amount {
	case amountRequired:
		amountHelp += " (required)"
	case amountOrderTotal:
		amountHelp += " (default: the order's amount)"
	case amountZeroMeansAll:
		amountHelp += " (default: everything not captured)"
	}
	amountStr := fs.String("amount", "", amountHelp)
	var batch, target *string
	if op.batch {
		batch = fs.String("batch", "", "an open settlement batch to put the item in (optional)")
	}
	if op.target != "" {
		what := strings.TrimSuffix(op.target, "-id")
		target = fs.String(op.target, "", "the "+what+" to undo: its rrpid, as merchant "+what+" and merchant inquiry print it (required)")
	}
	requestID := fs.String("request-id", "", "names this request for retries: the same request ID is the same request "+
		"(default: derived from the XID, amount, batch and target, so rerunning the same command changes nothing; "+
		"give a new one for a second request with the same parameters)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	in := merchant.LifecycleInput{XID: *xid}
	if err := checkCLIID("xid", *xid); err != nil {
		return err
	}
	amountGiven := *amountStr != ""
	switch {
	case amountGiven:
		n, err := parseAmount(*amountStr, op.amount == amountZeroMeansAll)
		if err != nil {
			return err
		}
		in.Amount = n
	case op.amount == amountRequired:
		return usageErrorf("--amount is required")
	}
	if batch != nil && *batch != "" {
		if err := checkCLIID("batch", *batch); err != nil {
			return err
		}
		in.BatchID = *batch
	}
	if target != nil {
		if err := checkCLIID(op.target, *target); err != nil {
			return err
		}
		in.TargetID = *target
	}
	if *requestID != "" {
		if err := checkCLIID("request-id", *requestID); err != nil {
			return err
		}
	}
	p, err := openOperatorMerchant(ctx, env, of.config)
	if err != nil {
		return err
	}
	defer p.close()
	if !amountGiven && op.amount == amountOrderTotal {
		o, err := orderOf(ctx, p.db, in.XID)
		if err != nil {
			return err
		}
		in.Amount = o.Amount
	}
	rid := *requestID
	if rid == "" {
		// ';' and '=' are refused in --request-id, so a derived ID is never one given.
		rid = fmt.Sprintf("amount=%d;batch=%s;target=%s", in.Amount, in.BatchID, in.TargetID)
	}
	in.RRPID = merchant.OperatorRRPID(p.m.ID(), op.kind, in.XID, rid)
	ctx, cancel := context.WithTimeout(ctx, gatewayTimeout)
	defer cancel()
	res, err := op.send(p.m, ctx, in)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op.name, in.XID, err)
	}
	out := lifecycleOutput(op.name, rid, res)
	return printOp(env.stdout, of.json, out)
}

// orderOf reads one of the merchant's orders.
func orderOf(ctx context.Context, db *store.Store, xid string) (*store.Order, error) {
	var o *store.Order
	err := db.View(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		o, err = tx.GetOrder(ctx, xid)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no purchase %s in the merchant's store", xid)
	}
	return o, err
}

func runMerchantInquiry(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay merchant inquiry", env)
	of := opFlagsOn(fs)
	xid := fs.String("xid", "", "the purchase's transaction ID (XID) (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkCLIID("xid", *xid); err != nil {
		return err
	}
	p, err := openOperatorMerchant(ctx, env, of.config)
	if err != nil {
		return err
	}
	defer p.close()
	// A query changes nothing: a fresh pair ID each time, so it reads the state now.
	ctx, cancel := context.WithTimeout(ctx, gatewayTimeout)
	defer cancel()
	res, err := p.m.GatewayInquiry(ctx, "", *xid)
	if err != nil {
		return fmt.Errorf("inquiry %s: %w", *xid, err)
	}
	return printOp(env.stdout, of.json, lifecycleOutput("inquiry", "", res))
}

func batchCmd(action setpb.BatchAction) func(ctx context.Context, env *cliEnv, args []string) error {
	return func(ctx context.Context, env *cliEnv, args []string) error {
		return runMerchantBatch(ctx, env, args, action)
	}
}

// batchVerb is the subcommand of a batch action.
func batchVerb(a setpb.BatchAction) string {
	switch a {
	case setpb.BatchAction_BATCH_OPEN:
		return "open"
	case setpb.BatchAction_BATCH_CLOSE:
		return "close"
	}
	return "list"
}

func runMerchantBatch(ctx context.Context, env *cliEnv, args []string, action setpb.BatchAction) error {
	verb := batchVerb(action)
	fs := newFlags("setpay merchant batch "+verb, env)
	of := opFlagsOn(fs)
	id := fs.String("batch", "", "the batch ID, chosen by the merchant when it opens the batch (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkCLIID("batch", *id); err != nil {
		return err
	}
	p, err := openOperatorMerchant(ctx, env, of.config)
	if err != nil {
		return err
	}
	defer p.close()
	// Opening and closing are retried safely (their pair ID follows the batch);
	// listing reads the state now.
	rrpid := ""
	if action != setpb.BatchAction_BATCH_QUERY {
		rrpid = merchant.OperatorRRPID(p.m.ID(), setpb.ContentKind_BATCH_ADMIN_REQUEST, *id, verb)
	}
	ctx, cancel := context.WithTimeout(ctx, gatewayTimeout)
	defer cancel()
	res, err := p.m.Batch(ctx, rrpid, *id, action)
	if err != nil {
		return fmt.Errorf("batch %s %s: %w", verb, *id, err)
	}
	return printOp(env.stdout, of.json, lifecycleOutput("batch "+verb, "", res))
}

// ordersLimit bounds `merchant orders` by default.
const ordersLimit = 100

func runMerchantOrders(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay merchant orders", env)
	of := opFlagsOn(fs)
	state := fs.String("state", "", "only orders in this state (pending, authorized, captured, refunded, reversed, declined, refused)")
	limit := fs.Int("limit", ordersLimit, "at most this many orders, newest first")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *limit <= 0 {
		return usageErrorf("--limit: must be positive, got %d", *limit)
	}
	if *state != "" {
		if err := checkCLIID("state", *state); err != nil {
			return err
		}
	}
	var cfg merchantConfig
	if err := loadConfig(of.config, &cfg); err != nil {
		return err
	}
	// The orders are in the store: the token and the gateway are not needed.
	db, err := store.Open(ctx, cfg.Store, store.MustExist())
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer db.Close()
	var orders []store.Order
	if err := db.View(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		orders, err = tx.ListOrders(ctx, store.OrderState(*state), *limit)
		return err
	}); err != nil {
		return err
	}
	// The merchant never holds a card number: an order is its XID, offer, amount
	// and state (the cardholder's certificate thumbprint stays in the store).
	out := make([]orderJSON, 0, len(orders))
	for _, o := range orders {
		out = append(out, orderJSON{XID: o.XID, OrderID: o.MerchantOrderID, State: string(o.State), Amount: o.Amount,
			Currency: o.Currency, Created: o.CreatedAt.UTC().Format(time.RFC3339), Updated: o.UpdatedAt.UTC().Format(time.RFC3339)})
	}
	if of.json {
		return writeJSON(env.stdout, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(env.stdout, "no orders")
	}
	for _, o := range out {
		fmt.Fprintf(env.stdout, "%s  %-10s %10s %s  %s  %s\n", o.XID, o.State, money(o.Amount), o.Currency, o.Created, o.OrderID)
	}
	return nil
}

type orderJSON struct {
	XID      string `json:"xid"`
	OrderID  string `json:"order_id"` // offer/XID
	State    string `json:"state"`
	Amount   int64  `json:"amount"` // minor units
	Currency string `json:"currency"`
	Created  string `json:"created"`
	Updated  string `json:"updated"`
}

// opJSON is the outcome of a lifecycle command: what the gateway's signed answer
// (verified, opened with the merchant's key-exchange key) says.
type opJSON struct {
	Operation string `json:"operation"`
	RequestID string `json:"request_id,omitempty"`
	RRPID     string `json:"rrpid"`
	XID       string `json:"xid,omitempty"`
	ItemID    string `json:"item_id,omitempty"` // the capture, credit or reversal recorded (= rrpid)
	Amount    int64  `json:"amount"`            // what the request moved, minor units
	Currency  string `json:"currency,omitempty"`
	// Answered is when the gateway signed the answer; a retry answered from the
	// gateway's record shows the first answer's time (and the state then).
	Answered    string     `json:"answered"`
	Transaction *txnJSON   `json:"transaction,omitempty"`
	Batch       *batchJSON `json:"batch,omitempty"`
}

type txnJSON struct {
	XID              string     `json:"xid"`
	Status           string     `json:"status"`
	Amount           int64      `json:"amount"`
	AuthorizedAmount int64      `json:"authorized_amount"`
	CapturedTotal    int64      `json:"captured_total"`
	CreditedTotal    int64      `json:"credited_total"`
	Currency         string     `json:"currency"`
	AuthCode         string     `json:"auth_code,omitempty"`
	Expires          string     `json:"expires,omitempty"`
	Items            []itemJSON `json:"items"`
}

type itemJSON struct {
	Type           string `json:"type"`
	ID             string `json:"id"`
	XID            string `json:"xid,omitempty"`
	Amount         int64  `json:"amount"`
	Currency       string `json:"currency"`
	BatchID        string `json:"batch_id,omitempty"`
	ReversedAmount int64  `json:"reversed_amount,omitempty"`
	TargetID       string `json:"target_id,omitempty"`
}

type batchJSON struct {
	BatchID   string      `json:"batch_id"`
	Status    string      `json:"status"`
	Opened    string      `json:"opened,omitempty"`
	Closed    string      `json:"closed,omitempty"`
	ItemCount int64       `json:"item_count"`
	Totals    []totalJSON `json:"totals"`
	Items     []itemJSON  `json:"items"`
}

type totalJSON struct {
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

func itemsJSON(items []*setpb.Item) []itemJSON {
	out := make([]itemJSON, 0, len(items))
	for _, it := range items {
		out = append(out, itemJSON{Type: it.GetType(), ID: it.GetId(), XID: it.GetXid(), Amount: it.GetAmount(), Currency: it.GetCurrency(),
			BatchID: it.GetBatchId(), ReversedAmount: it.GetReversedAmount(), TargetID: it.GetTargetId()})
	}
	return out
}

func lifecycleOutput(op, requestID string, res *merchant.LifecycleResult) opJSON {
	r := res.Response
	out := opJSON{Operation: op, RequestID: requestID, RRPID: r.GetRrpid(), XID: r.GetXid(), ItemID: r.GetItemId(),
		Amount: r.GetAmount(), Currency: r.GetCurrency(), Answered: res.Answered.UTC().Format(time.RFC3339)}
	if t := r.GetTransaction(); t != nil {
		out.Transaction = &txnJSON{XID: t.GetXid(), Status: t.GetStatus(), Amount: t.GetAmount(), AuthorizedAmount: t.GetAuthorizedAmount(),
			CapturedTotal: t.GetCapturedTotal(), CreditedTotal: t.GetCreditedTotal(), Currency: t.GetCurrency(), AuthCode: t.GetAuthCode(),
			Expires: unixTime(t.GetExpiresUnix()), Items: itemsJSON(t.GetItems())}
	}
	if b := r.GetBatch(); b != nil {
		bj := &batchJSON{BatchID: b.GetBatchId(), Status: b.GetStatus(), Opened: unixTime(b.GetOpenedUnix()), Closed: unixTime(b.GetClosedUnix()),
			ItemCount: b.GetItemCount(), Totals: []totalJSON{}, Items: itemsJSON(b.GetItems())}
		for _, t := range b.GetTotals() {
			bj.Totals = append(bj.Totals, totalJSON{Currency: t.GetCurrency(), Type: t.GetType(), Count: t.GetCount(), Amount: t.GetAmount()})
		}
		out.Batch = bj
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printOp prints a lifecycle outcome: JSON, or a line for the request and a line per
// batch total.
func printOp(w io.Writer, asJSON bool, o opJSON) error {
	if asJSON {
		return writeJSON(w, o)
	}
	var b strings.Builder
	b.WriteString(o.Operation)
	if o.XID != "" {
		b.WriteString(" " + o.XID)
	}
	if bt := o.Batch; bt != nil {
		fmt.Fprintf(&b, " %s: %s, %d item(s)", bt.BatchID, bt.Status, bt.ItemCount)
	}
	if o.ItemID != "" || o.Amount != 0 {
		fmt.Fprintf(&b, ": %s %s", money(o.Amount), o.Currency)
		if o.ItemID != "" {
			fmt.Fprintf(&b, " as item %s", o.ItemID)
		}
	}
	if t := o.Transaction; t != nil {
		fmt.Fprintf(&b, "; %s, authorized %s, captured %s, credited %s %s", t.Status, money(t.AuthorizedAmount),
			money(t.CapturedTotal), money(t.CreditedTotal), t.Currency)
		if len(t.Items) > 0 {
			fmt.Fprintf(&b, ", %d item(s)", len(t.Items))
		}
	}
	fmt.Fprintf(&b, " (rrpid %s, answered %s)\n", o.RRPID, o.Answered)
	if o.Batch != nil {
		for _, t := range o.Batch.Totals {
			fmt.Fprintf(&b, "  total %-16s %s %3d item(s) %12s\n", t.Type, t.Currency, t.Count, money(t.Amount))
		}
	}
	if t := o.Transaction; t != nil && o.Operation == "inquiry" {
		for _, it := range t.Items {
			fmt.Fprintf(&b, "  %-16s %s %10s %s", it.Type, it.ID, money(it.Amount), it.Currency)
			if it.BatchID != "" {
				fmt.Fprintf(&b, " batch %s", it.BatchID)
			}
			if it.ReversedAmount != 0 {
				fmt.Fprintf(&b, " reversed %s", money(it.ReversedAmount))
			}
			if it.TargetID != "" {
				fmt.Fprintf(&b, " of %s", it.TargetID)
			}
			b.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
