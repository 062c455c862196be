package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/wallet"
)

// TestMerchantRestartMidPurchase (issue 11, item 9): a purchase initiated before the
// merchant is killed (SIGKILL) and started again from the same configuration is
// completed after the restart and approved. The challenge of the initiation comes
// from the challenge key in the merchant's token, not from the process (a random key
// per process answered CHALLENGE_MISMATCH).
func TestMerchantRestartMidPurchase(t *testing.T) {
	b := newMerchantBed(t)
	w := b.wallet()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	s, err := w.Start(ctx, "book")
	require.NoError(t, err, "purchase initiation")
	b.killMerchant()
	b.startMerchant()

	req, err := w.Prepare(s)
	require.NoError(t, err)
	rc, err := w.Send(ctx, s, req)
	require.NoError(t, err, "the purchase initiated before the restart completes after it")
	assert.True(t, rc.Approved(), "%s", rc.Result)
	assert.Equal(t, s.Offer.GetXid(), rc.XID)

	var orders []orderJSON
	b.op(&orders, "orders")
	require.Len(t, orders, 1)
	assert.Equal(t, rc.XID, orders[0].XID)
	assert.Equal(t, "authorized", orders[0].State)
}

// findOrder is the order of xid in a `merchant orders --json` list.
func findOrder(t *testing.T, orders []orderJSON, xid string) orderJSON {
	t.Helper()
	for _, o := range orders {
		if o.XID == xid {
			return o
		}
	}
	require.Failf(t, "order not listed", "%s not in %v", xid, orders)
	return orderJSON{}
}

func itemsOf(items []itemJSON, typ string) []itemJSON {
	var out []itemJSON
	for _, it := range items {
		if it.Type == typ {
			out = append(out, it)
		}
	}
	return out
}

// TestMerchantOperatorCommands (issue 11, item 10): with a gateway and a merchant
// running as separate processes, the operator captures, credits, reverses, runs a
// settlement batch, lists the orders and asks the gateway, each a separate `setpay
// merchant ...` process next to the running `merchant serve` on the same store. A
// capture run again with the same request ID is answered from the gateway's record
// without capturing a second time; the same request ID for another amount is
// refused.
func TestMerchantOperatorCommands(t *testing.T) {
	b := newMerchantBed(t)
	cfg := b.merchantCfg
	xid := b.buy("book") // 49.90 EUR, authorization only
	other := b.buy("book")

	var open opJSON
	b.op(&open, "batch", "open", "--batch", "settle-1")
	require.NotNil(t, open.Batch)
	assert.Equal(t, "open", open.Batch.Status)

	var capture opJSON
	b.op(&capture, "capture", "--xid", xid, "--amount", "3000", "--batch", "settle-1", "--request-id", "cap-1")
	require.NotNil(t, capture.Transaction)
	assert.Equal(t, int64(3000), capture.Amount)
	assert.Equal(t, "EUR", capture.Currency)
	assert.Equal(t, "partially_captured", capture.Transaction.Status)
	assert.Equal(t, int64(3000), capture.Transaction.CapturedTotal)
	assert.Equal(t, capture.RRPID, capture.ItemID, "the capture is named by its pair ID")

	t.Run("a retried capture is answered, not made again", func(t *testing.T) {
		var again opJSON
		b.op(&again, "capture", "--xid", xid, "--amount", "3000", "--batch", "settle-1", "--request-id", "cap-1")
		assert.Equal(t, capture, again, "the same request gets the stored answer")
		var inq opJSON
		b.op(&inq, "inquiry", "--xid", xid)
		require.NotNil(t, inq.Transaction)
		assert.Equal(t, int64(3000), inq.Transaction.CapturedTotal)
		assert.Len(t, itemsOf(inq.Transaction.Items, "capture"), 1, "one capture at the gateway")

		r := b.setpay("merchant", "capture", "--config", cfg, "--xid", xid, "--amount", "1000", "--request-id", "cap-1")
		assert.Equal(t, 1, r.code, "%s", r)
		assert.Contains(t, r.stderr, "REPLAY", "the same request ID for another request")
	})

	var orders []orderJSON
	b.op(&orders, "orders")
	assert.Equal(t, "captured", findOrder(t, orders, xid).State)
	assert.Equal(t, int64(49_90), findOrder(t, orders, xid).Amount)
	assert.Equal(t, "authorized", findOrder(t, orders, other).State)
	assert.NotContains(t, strings.ToLower(b.setpay("merchant", "orders", "--config", cfg, "--json").stdout), "pan", "the merchant holds no card")

	var credit opJSON
	b.op(&credit, "credit", "--xid", xid, "--amount", "1000", "--batch", "settle-1")
	require.NotNil(t, credit.Transaction)
	assert.Equal(t, int64(1000), credit.Transaction.CreditedTotal)

	var closed opJSON
	b.op(&closed, "batch", "close", "--batch", "settle-1")
	require.NotNil(t, closed.Batch)
	assert.Equal(t, "closed", closed.Batch.Status)
	assert.Equal(t, int64(2), closed.Batch.ItemCount)
	assert.ElementsMatch(t, []totalJSON{
		{Currency: "EUR", Type: "capture", Count: 1, Amount: 3000},
		{Currency: "EUR", Type: "credit", Count: 1, Amount: 1000},
	}, closed.Batch.Totals)
	var listed opJSON
	b.op(&listed, "batch", "list", "--batch", "settle-1")
	require.NotNil(t, listed.Batch)
	assert.Equal(t, closed.Batch.Totals, listed.Batch.Totals)
	assert.Equal(t, "closed", listed.Batch.Status)

	var rc opJSON
	b.op(&rc, "reverse-credit", "--xid", xid, "--credit-id", credit.ItemID, "--amount", "500")
	require.NotNil(t, rc.Transaction)
	assert.Equal(t, int64(500), rc.Transaction.CreditedTotal)
	var rcap opJSON
	b.op(&rcap, "reverse-capture", "--xid", xid, "--capture-id", capture.ItemID, "--amount", "1000")
	require.NotNil(t, rcap.Transaction)
	assert.Equal(t, int64(2000), rcap.Transaction.CapturedTotal)

	var ra opJSON
	b.op(&ra, "reverse-auth", "--xid", other)
	require.NotNil(t, ra.Transaction)
	assert.Equal(t, "reversed", ra.Transaction.Status)
	assert.Equal(t, int64(49_90), ra.Amount, "a full reversal moves everything authorized")
	b.op(&orders, "orders", "--state", "reversed")
	require.Len(t, orders, 1)
	assert.Equal(t, other, orders[0].XID)

	var inq opJSON
	b.op(&inq, "inquiry", "--xid", xid)
	require.NotNil(t, inq.Transaction)
	assert.Equal(t, int64(2000), inq.Transaction.CapturedTotal)
	assert.Equal(t, int64(500), inq.Transaction.CreditedTotal)
	for _, typ := range []string{"capture", "credit", "capture_reversal", "credit_reversal"} {
		assert.Len(t, itemsOf(inq.Transaction.Items, typ), 1, typ)
	}

	t.Run("human output", func(t *testing.T) {
		r := b.setpay("merchant", "inquiry", "--config", cfg, "--xid", xid)
		require.Zero(t, r.code, "%s", r)
		assert.Contains(t, r.stdout, "inquiry "+xid+"; partially_captured")
		assert.Contains(t, r.stdout, "captured 20.00, credited 5.00 EUR")
		assert.Contains(t, r.stdout, "capture_reversal")
		r = b.setpay("merchant", "capture", "--config", cfg, "--xid", xid, "--amount", "3000", "--batch", "settle-1", "--request-id", "cap-1")
		require.Zero(t, r.code, "%s", r)
		assert.Contains(t, r.stdout, "capture "+xid+": 30.00 EUR as item "+capture.ItemID+"; partially_captured, authorized 49.90, captured 30.00",
			"a retry prints the first answer, with its time")
		assert.Contains(t, r.stdout, "answered "+capture.Answered)
		r = b.setpay("merchant", "orders", "--config", cfg)
		require.Zero(t, r.code, "%s", r)
		assert.Contains(t, r.stdout, xid)
		assert.Contains(t, r.stdout, "49.90 EUR")
		r = b.setpay("merchant", "batch", "list", "--config", cfg, "--batch", "settle-1")
		require.Zero(t, r.code, "%s", r)
		assert.Contains(t, r.stdout, "batch list settle-1: closed, 2 item(s)")
		assert.Regexp(t, `total capture +EUR +1 item\(s\) +30\.00`, r.stdout)
	})

	t.Run("runtime errors exit 1", func(t *testing.T) {
		for name, args := range map[string][]string{
			"unknown purchase":      {"merchant", "capture", "--config", cfg, "--xid", "no-such-xid"},
			"credit beyond capture": {"merchant", "credit", "--config", cfg, "--xid", xid, "--amount", "99999"},
			"capture a reversed":    {"merchant", "capture", "--config", cfg, "--xid", other},
			"closed batch":          {"merchant", "capture", "--config", cfg, "--xid", xid, "--amount", "100", "--batch", "settle-1"},
			"no such config":        {"merchant", "orders", "--config", "/nonexistent/merchant.yaml"},
		} {
			t.Run(name, func(t *testing.T) {
				r := b.setpay(args...)
				assert.Equal(t, 1, r.code, "%s", r)
				assert.NotContains(t, r.stderr, "panic:")
				assert.Empty(t, r.stdout)
			})
		}
	})
	// The merchant kept serving throughout, on the same store.
	b.buy("coffee")
}

// TestMerchantOperatorUsageErrors: a wrong or missing flag of an operator command
// exits 2 naming the flag, before anything is opened.
func TestMerchantOperatorUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"capture"}, "--xid is required"},
		{[]string{"capture", "--xid", "x", "--amount", "49.90"}, "--amount: want an integer number of minor units (4990 for 49.90)"},
		{[]string{"capture", "--xid", "x", "--amount", "0"}, "--amount: must be positive"},
		{[]string{"capture", "--xid", "x", "--amount", "-5"}, "--amount: must be positive"},
		{[]string{"capture", "--xid", "x", "--amount", "99999999999999999999"}, "--amount"},
		{[]string{"capture", "--xid", "bad xid"}, "--xid: want 1..64 characters"},
		{[]string{"capture", "--xid", "x", "--request-id", "a/b"}, "--request-id"},
		{[]string{"capture", "--xid", "x", "--batch", "b b"}, "--batch"},
		{[]string{"capture", "--xid", "x", "--nosuch"}, "flag provided but not defined: -nosuch"},
		{[]string{"credit", "--xid", "x"}, "--amount is required"},
		{[]string{"reverse-auth", "--xid", "x", "--amount", "-1"}, "--amount: must be positive"},
		{[]string{"reverse-capture", "--xid", "x", "--amount", "100"}, "--capture-id is required"},
		{[]string{"reverse-credit", "--xid", "x", "--amount", "100"}, "--credit-id is required"},
		{[]string{"inquiry"}, "--xid is required"},
		{[]string{"batch", "open"}, "--batch is required"},
		{[]string{"batch", "close", "--batch", "a:b"}, "--batch"},
		{[]string{"batch", "nosuch"}, `unknown command "nosuch"`},
		{[]string{"orders", "--limit", "0"}, "--limit: must be positive"},
		{[]string{"orders", "stray"}, `unexpected argument "stray"`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runSetpay(t, t.TempDir(), nil, append([]string{"merchant"}, tc.args...)...)
			assert.Equal(t, 2, r.code, "%s", r)
			assert.Contains(t, r.stderr, tc.want)
			assert.Empty(t, r.stdout)
		})
	}
	for _, cmd := range [][]string{{"capture"}, {"credit"}, {"reverse-auth"}, {"reverse-capture"}, {"reverse-credit"},
		{"inquiry"}, {"orders"}, {"batch", "open"}, {"batch", "close"}, {"batch", "list"}} {
		r := runSetpay(t, t.TempDir(), nil, append(append([]string{"merchant"}, cmd...), "--help")...)
		assert.Zero(t, r.code, "%s", r)
		assert.Contains(t, r.stdout, "-json", "%v takes --json", cmd)
		assert.Contains(t, r.stdout, "-config")
	}
}

// TestMerchantServeRequiresChallengeKey: `merchant serve` (and every operator
// command) refuses a configuration without challenge_key, or one naming a key the
// token does not hold, naming the field.
func TestMerchantServeRequiresChallengeKey(t *testing.T) {
	root := demoFixture(t)
	env := []string{"SOFTHSM2_CONF=" + root + "/softhsm/softhsm2.conf"}
	for name, tc := range map[string]struct {
		key  string
		want []string
	}{
		"missing":      {"", []string{"challenge_key: required"}},
		"not a URI":    {"merchant-challenge", []string{"challenge_key: want a pkcs11: URI"}},
		"not in token": {"pkcs11:token=setpay-merchant;object=no-such-key;type=secret-key", []string{"challenge_key: ", "no-such-key"}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			c := readConfig[merchantConfig](t, root+"/merchant.yaml")
			c.Listen, c.MetricsListen, c.ChallengeKey = "127.0.0.1:0", "", tc.key
			cfg := dir + "/merchant.yaml"
			writeConfig(t, cfg, c)
			for _, args := range [][]string{{"merchant", "serve", "--config", cfg}, {"merchant", "inquiry", "--config", cfg, "--xid", "x"}} {
				r := runSetpay(t, dir, env, args...)
				assert.Equal(t, 1, r.code, "%s", r)
				assert.NotContains(t, r.stdout, "listening on")
				for _, w := range tc.want {
					assert.Contains(t, r.stderr, w)
				}
			}
		})
	}
}

// TestMerchantOperatorCommandsWhilePurchasing: operator commands write the store a
// running `merchant serve` writes, at the same time as purchases (another process:
// SQLite's write lock is waited for, not failed on). Every purchase and every command
// succeeds, and the capture taken meanwhile is recorded once.
func TestMerchantOperatorCommandsWhilePurchasing(t *testing.T) {
	b := newMerchantBed(t)
	xid := b.buy("book")
	const buyers = 4
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wallets := make([]*wallet.Wallet, buyers)
	for i := range wallets {
		wallets[i] = b.wallet()
	}
	errs := make(chan error, buyers)
	for _, w := range wallets {
		go func() {
			r, err := w.Buy(ctx, "book")
			if err == nil && !r.Approved() {
				err = fmt.Errorf("purchase %s: %s", r.XID, r.Result)
			}
			errs <- err
		}()
	}
	var capture opJSON
	b.op(&capture, "capture", "--xid", xid)
	var orders []orderJSON
	b.op(&orders, "orders")
	var inq opJSON
	b.op(&inq, "inquiry", "--xid", xid)
	for range buyers {
		assert.NoError(t, <-errs)
	}
	require.NotNil(t, capture.Transaction)
	assert.Equal(t, "captured", capture.Transaction.Status)
	assert.Equal(t, int64(49_90), capture.Transaction.CapturedTotal)
	assert.Len(t, itemsOf(inq.Transaction.Items, "capture"), 1)
	b.op(&orders, "orders")
	assert.Len(t, orders, buyers+1)
	assert.Equal(t, "captured", findOrder(t, orders, xid).State)
}
