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
// The operations themselves are the merchant package's (merchant/operator.go), which
// the merchant console calls too. Retrying is safe: every request that changes
// something has a pair ID (merchant.OperatorRRPID) derived from the merchant, the
// kind, the XID (or batch) and a request ID, by default the request's own
// parameters. The same command run again is the same request at the gateway, which
// answers it with its first answer and changes nothing. A second, distinct request
// with the same parameters (a second capture of the same amount) needs its own
// --request-id. Queries (inquiry, batch list) take a fresh pair ID each time.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/setpay/setpay/merchant"
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
		"console-user":    {summary: "add an operator to the merchant console's users file (or set a new password)", run: runConsoleUser},
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

// The lifecycle commands are the merchant package's operations; the console sends
// the same ones.
var (
	opCapture        = merchant.OpCapture
	opCredit         = merchant.OpCredit
	opReverseAuth    = merchant.OpReverseAuth
	opReverseCapture = merchant.OpReverseCapture
	opReverseCredit  = merchant.OpReverseCredit
)

// checkCLIID checks an identifier given on the command line the way the protocol
// checks it (1..64 characters of [A-Za-z0-9._-]).
func checkCLIID(flagName, v string) error {
	if err := merchant.CheckID(v); errors.Is(err, merchant.ErrRequired) {
		return usageErrorf("--%s is required", flagName)
	} else if err != nil {
		return usageErrorf("--%s: %v", flagName, err)
	}
	return nil
}

// parseAmount reads --amount: a positive integer of minor units (or 0 where allow0).
func parseAmount(v string, allow0 bool) (int64, error) {
	n, err := merchant.ParseAmount(v, allow0)
	if err != nil {
		return 0, usageErrorf("--amount: %v", err)
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

func lifecycleCmd(op merchant.Operation) func(ctx context.Context, env *cliEnv, args []string) error {
	return func(ctx context.Context, env *cliEnv, args []string) error {
		return runLifecycle(ctx, env, args, op)
	}
}

func runLifecycle(ctx context.Context, env *cliEnv, args []string, op merchant.Operation) error {
	fs := newFlags("setpay merchant "+op.Name, env)
	of := opFlagsOn(fs)
	xid := fs.String("xid", "", "the purchase's transaction ID (XID), as merchant orders lists it (required)")
	amountHelp := "amount in the order currency's minor units, an integer (4990 for 49.90)"
	switch op.Amount {
	case merchant.AmountRequired:
		amountHelp += " (required)"
	case merchant.AmountOrderTotal:
		amountHelp += " (default: the order's amount)"
	case merchant.AmountZeroMeansAll:
		amountHelp += " (default: everything not captured)"
	}
	amountStr := fs.String("amount", "", amountHelp)
	var batch, target *string
	if op.Batch {
		batch = fs.String("batch", "", "an open settlement batch to put the item in (optional)")
	}
	targetFlag := op.Target + "-id"
	if op.Target != "" {
		target = fs.String(targetFlag, "", "the "+op.Target+" to undo: its rrpid, as merchant "+op.Target+" and merchant inquiry print it (required)")
	}
	requestID := fs.String("request-id", "", "names this request for retries: the same request ID is the same request "+
		"(default: derived from the XID, amount, batch and target, so rerunning the same command changes nothing; "+
		"give a new one for a second request with the same parameters)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r := merchant.OperatorRequest{XID: *xid, RequestID: *requestID}
	if err := checkCLIID("xid", *xid); err != nil {
		return err
	}
	switch {
	case *amountStr != "":
		n, err := parseAmount(*amountStr, op.Amount == merchant.AmountZeroMeansAll)
		if err != nil {
			return err
		}
		r.Amount = n
	case op.Amount == merchant.AmountRequired:
		return usageErrorf("--amount is required")
	}
	if batch != nil && *batch != "" {
		if err := checkCLIID("batch", *batch); err != nil {
			return err
		}
		r.BatchID = *batch
	}
	if target != nil {
		if err := checkCLIID(targetFlag, *target); err != nil {
			return err
		}
		r.TargetID = *target
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
	ctx, cancel := context.WithTimeout(ctx, gatewayTimeout)
	defer cancel()
	out, err := p.m.Operate(ctx, op, r)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op.Name, r.XID, err)
	}
	return printOp(env.stdout, of.json, *out)
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
	ctx, cancel := context.WithTimeout(ctx, gatewayTimeout)
	defer cancel()
	out, err := p.m.OperatorInquiry(ctx, *xid)
	if err != nil {
		return fmt.Errorf("inquiry %s: %w", *xid, err)
	}
	return printOp(env.stdout, of.json, *out)
}

func batchCmd(action setpb.BatchAction) func(ctx context.Context, env *cliEnv, args []string) error {
	return func(ctx context.Context, env *cliEnv, args []string) error {
		return runMerchantBatch(ctx, env, args, action)
	}
}

func runMerchantBatch(ctx context.Context, env *cliEnv, args []string, action setpb.BatchAction) error {
	verb := merchant.BatchVerb(action)
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
	ctx, cancel := context.WithTimeout(ctx, gatewayTimeout)
	defer cancel()
	out, err := p.m.OperateBatch(ctx, action, *id)
	if err != nil {
		return fmt.Errorf("batch %s %s: %w", verb, *id, err)
	}
	return printOp(env.stdout, of.json, *out)
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
	out, err := merchant.ListOrders(ctx, db, store.OrderState(*state), *limit)
	if err != nil {
		return err
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

// The JSON the operator commands print is the merchant package's: the console
// shows the same outcomes.
type (
	orderJSON = merchant.OrderSummary
	opJSON    = merchant.Outcome
	itemJSON  = merchant.Item
	totalJSON = merchant.BatchTotal
)

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
