package lifecycletest

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/gateway"
	"github.com/setpay/setpay/internal/clock"
	"github.com/setpay/setpay/internal/testenv"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system"
)

// forEachBackend runs fn with a gateway store DSN on SQLite and, when
// SETPAY_TEST_PG_DSN is set, on a fresh PostgreSQL schema.
func forEachBackend(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, "sqlite:"+filepath.Join(t.TempDir(), "gw.db")) })
	t.Run("postgres", func(t *testing.T) { fn(t, testenv.PostgresSchema(t)) })
}

// TestLifecycle runs every lifecycle test on one bed per backend (building a bed
// costs more than the tests).
func TestLifecycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, dsn string) {
		e := newBedOn(t, dsn)
		t.Run("CaptureCreditReversalsBatch", func(t *testing.T) { testLifecycleCaptureCreditReversalsBatch(t, e) })
		t.Run("ReversalsAndRefusals", func(t *testing.T) { testLifecycleReversalsAndRefusals(t, e) })
		t.Run("RetriesAndReplays", func(t *testing.T) { testLifecycleRetriesAndReplays(t, e) })
		t.Run("TwoGatewaysCaptureOnce", func(t *testing.T) { testTwoGatewaysCaptureOnce(t, e, dsn) })
	})
}

// buy makes an approved purchase of offer by card and returns its XID.
func buy(t *testing.T, e *env, card int, offer string) string {
	t.Helper()
	w, err := e.Wallet(card)
	require.NoError(t, err)
	r, err := w.Buy(context.Background(), offer)
	require.NoError(t, err)
	require.Equal(t, setpb.AuthResult_APPROVED, r.Result)
	return r.XID
}

func auth(t *testing.T, e *env, xid string) *store.Authorization {
	t.Helper()
	var a *store.Authorization
	require.NoError(t, e.GatewayDB.View(context.Background(), func(ctx context.Context, tx store.Tx) error {
		var err error
		a, err = tx.GetAuthorization(ctx, "shop-1", xid)
		return err
	}))
	return a
}

func orderState(t *testing.T, e *env, xid string) store.OrderState {
	t.Helper()
	var o *store.Order
	require.NoError(t, e.MerchantDB.View(context.Background(), func(ctx context.Context, tx store.Tx) error {
		var err error
		o, err = tx.GetOrder(ctx, xid)
		return err
	}))
	return o.State
}

func refused(t *testing.T, err error, reason setpb.Reason, code codes.Code) {
	t.Helper()
	require.Error(t, err)
	assert.Equal(t, reason.String(), setproto.ReasonOf(err).String(), "error: %v", err)
	assert.Equal(t, code.String(), status.Code(err).String(), "error: %v", err)
}

func testLifecycleCaptureCreditReversalsBatch(t *testing.T, e *env) {
	ctx := context.Background()
	m := e.Merchant
	xid := buy(t, e, 0, "book") // 25.00 EUR, authorization only
	_, err := m.Batch(ctx, "", "batch-1", setpb.BatchAction_BATCH_OPEN)
	require.NoError(t, err)

	c1, err := m.Capture(ctx, merchant.LifecycleInput{RRPID: "cap-1", XID: xid, Amount: 10_00, BatchID: "batch-1"})
	require.NoError(t, err)
	assert.Equal(t, "partially_captured", c1.Response.GetTransaction().GetStatus())
	assert.Equal(t, "cap-1", c1.Response.GetItemId())
	_, err = m.Capture(ctx, merchant.LifecycleInput{RRPID: "cap-2", XID: xid, Amount: 16_00, BatchID: "batch-1"})
	refused(t, err, setpb.Reason_AMOUNT_EXCEEDED, codes.OutOfRange)
	c2, err := m.Capture(ctx, merchant.LifecycleInput{RRPID: "cap-3", XID: xid, Amount: 15_00, BatchID: "batch-1"})
	require.NoError(t, err)
	assert.Equal(t, "captured", c2.Response.GetTransaction().GetStatus())
	assert.Equal(t, store.OrderCaptured, orderState(t, e, xid))
	_, err = m.Capture(ctx, merchant.LifecycleInput{XID: xid, Amount: 1})
	refused(t, err, setpb.Reason_AMOUNT_EXCEEDED, codes.OutOfRange) // captured in full already

	_, err = m.Credit(ctx, merchant.LifecycleInput{RRPID: "cred-1", XID: xid, Amount: 5_00, BatchID: "batch-1"})
	require.NoError(t, err)
	_, err = m.Credit(ctx, merchant.LifecycleInput{RRPID: "cred-2", XID: xid, Amount: 20_01, BatchID: "batch-1"})
	refused(t, err, setpb.Reason_AMOUNT_EXCEEDED, codes.OutOfRange)
	_, err = m.ReverseCredit(ctx, merchant.LifecycleInput{RRPID: "crev-1", XID: xid, Amount: 2_00, TargetID: "cred-1", BatchID: "batch-1"})
	require.NoError(t, err)
	_, err = m.ReverseCredit(ctx, merchant.LifecycleInput{RRPID: "crev-2", XID: xid, Amount: 3_01, TargetID: "cred-1"})
	refused(t, err, setpb.Reason_AMOUNT_EXCEEDED, codes.OutOfRange)
	_, err = m.ReverseCapture(ctx, merchant.LifecycleInput{RRPID: "caprev-1", XID: xid, Amount: 10_00, TargetID: "cap-1", BatchID: "batch-1"})
	require.NoError(t, err)
	_, err = m.ReverseCapture(ctx, merchant.LifecycleInput{RRPID: "caprev-2", XID: xid, Amount: 1, TargetID: "no-such-capture"})
	refused(t, err, setpb.Reason_UNKNOWN_TRANSACTION, codes.NotFound)

	inq, err := m.GatewayInquiry(ctx, "", xid)
	require.NoError(t, err)
	ts := inq.Response.GetTransaction()
	assert.Equal(t, int64(25_00), ts.GetAuthorizedAmount())
	assert.Equal(t, int64(15_00), ts.GetCapturedTotal())
	assert.Equal(t, int64(3_00), ts.GetCreditedTotal())
	assert.Len(t, ts.GetItems(), 5)

	closed, err := m.Batch(ctx, "", "batch-1", setpb.BatchAction_BATCH_CLOSE)
	require.NoError(t, err)
	b := closed.Response.GetBatch()
	assert.Equal(t, "closed", b.GetStatus())
	assert.Len(t, b.GetItems(), 5)
	got := map[string][2]int64{}
	for _, bt := range b.GetTotals() {
		got[bt.GetCurrency()+"/"+bt.GetType()] = [2]int64{bt.GetCount(), bt.GetAmount()}
	}
	assert.Equal(t, map[string][2]int64{
		"EUR/capture": {2, 25_00}, "EUR/credit": {1, 5_00}, "EUR/credit_reversal": {1, 2_00}, "EUR/capture_reversal": {1, 10_00},
	}, got)
	_, err = m.Batch(ctx, "", "batch-1", setpb.BatchAction_BATCH_CLOSE)
	refused(t, err, setpb.Reason_INVALID_STATE, codes.FailedPrecondition)
	_, err = m.Credit(ctx, merchant.LifecycleInput{XID: xid, Amount: 1_00, BatchID: "batch-1"})
	refused(t, err, setpb.Reason_INVALID_STATE, codes.FailedPrecondition)
	_, err = m.Batch(ctx, "", "no-batch", setpb.BatchAction_BATCH_QUERY)
	refused(t, err, setpb.Reason_UNKNOWN_TRANSACTION, codes.NotFound)

	// Full refund of what is left captured: the order is refunded.
	_, err = m.Credit(ctx, merchant.LifecycleInput{XID: xid, Amount: 12_00})
	require.NoError(t, err)
	assert.Equal(t, store.OrderRefunded, orderState(t, e, xid))
	_, err = e.GatewayDB.ChainAudit(ctx) // PostgreSQL links audit records after commit
	require.NoError(t, err)
	n, err := e.GatewayDB.VerifyAudit(ctx)
	require.NoError(t, err)
	assert.Greater(t, n, int64(20))
}

func testLifecycleReversalsAndRefusals(t *testing.T, e *env) {
	ctx := context.Background()
	m := e.Merchant
	a, b, sale := buy(t, e, 0, "book"), buy(t, e, 0, "book"), buy(t, e, 0, "coffee")

	// Partial then full authorization reversal; capture after it is refused.
	r, err := m.ReverseAuthorization(ctx, merchant.LifecycleInput{XID: a, Amount: 5_00})
	require.NoError(t, err)
	assert.Equal(t, int64(20_00), r.Response.GetTransaction().GetAuthorizedAmount())
	_, err = m.Capture(ctx, merchant.LifecycleInput{XID: a, Amount: 20_01})
	refused(t, err, setpb.Reason_AMOUNT_EXCEEDED, codes.OutOfRange)
	r, err = m.ReverseAuthorization(ctx, merchant.LifecycleInput{XID: a})
	require.NoError(t, err)
	assert.Equal(t, int64(20_00), r.Response.GetAmount(), "a full reversal reverses what is left")
	assert.Equal(t, "reversed", r.Response.GetTransaction().GetStatus())
	assert.Equal(t, merchant.StateReversed, orderState(t, e, a))
	_, err = m.Capture(ctx, merchant.LifecycleInput{XID: a, Amount: 1_00})
	refused(t, err, setpb.Reason_INVALID_STATE, codes.FailedPrecondition)
	_, err = m.ReverseAuthorization(ctx, merchant.LifecycleInput{XID: a})
	refused(t, err, setpb.Reason_INVALID_STATE, codes.FailedPrecondition)

	// A sale is captured: its capture can be reversed, credited up to the total.
	_, err = m.Credit(ctx, merchant.LifecycleInput{XID: sale, Amount: 15_01})
	refused(t, err, setpb.Reason_AMOUNT_EXCEEDED, codes.OutOfRange)
	_, err = m.ReverseCapture(ctx, merchant.LifecycleInput{XID: sale, Amount: 15_00, TargetID: "sale-" + sale})
	require.NoError(t, err)
	_, err = m.Credit(ctx, merchant.LifecycleInput{XID: sale, Amount: 1})
	refused(t, err, setpb.Reason_AMOUNT_EXCEEDED, codes.OutOfRange)

	// A token of another authorization, a credit before any capture.
	var orderA *store.Order
	require.NoError(t, e.MerchantDB.View(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		orderA, err = tx.GetOrder(ctx, a)
		return err
	}))
	_, err = m.SendLifecycle(ctx, &setpb.CaptureRequest{Xid: b, Amount: 1_00, Currency: "EUR", CaptureToken: orderA.CaptureToken})
	refused(t, err, setpb.Reason_XID_MISMATCH, codes.PermissionDenied)
	_, err = m.Credit(ctx, merchant.LifecycleInput{XID: b, Amount: 1_00})
	refused(t, err, setpb.Reason_AMOUNT_EXCEEDED, codes.OutOfRange)
	_, err = m.SendLifecycle(ctx, &setpb.CaptureRequest{Xid: b, Amount: 1_00, Currency: "USD", CaptureToken: orderA.CaptureToken})
	require.Error(t, err)

	// A token the gateway did not sign, and one it signed with another token ID.
	forged, err := setproto.SignMessage(setpb.ContentKind_CAPTURE_TOKEN, &setpb.CaptureToken{TokenId: "t", Xid: b, MerchantId: "shop-1",
		Amount: 25_00, Currency: "EUR", AuthCode: "000000"}, e.MerchantEnt.Sign, time.Now(), nil)
	require.NoError(t, err)
	_, err = m.SendLifecycle(ctx, &setpb.CaptureRequest{Xid: b, Amount: 1_00, Currency: "EUR", CaptureToken: forged})
	refused(t, err, setpb.Reason_TOKEN_MISMATCH, codes.PermissionDenied)
	other, err := setproto.SignMessage(setpb.ContentKind_CAPTURE_TOKEN, &setpb.CaptureToken{TokenId: "not-the-issued-one", Xid: b,
		MerchantId: "shop-1", Amount: 25_00, Currency: "EUR", AuthCode: "000000"}, e.GatewayEnt.Sign, time.Now(), nil)
	require.NoError(t, err)
	_, err = m.SendLifecycle(ctx, &setpb.CaptureRequest{Xid: b, Amount: 1_00, Currency: "EUR", CaptureToken: other})
	refused(t, err, setpb.Reason_TOKEN_MISMATCH, codes.PermissionDenied)

	// Unknown authorization, for every kind that names one.
	for _, req := range []setproto.LifecycleRequest{
		&setpb.AuthReversalRequest{Xid: "no-such-xid", Currency: "EUR"},
		&setpb.CreditRequest{Xid: "no-such-xid", Amount: 1, Currency: "EUR"},
		&setpb.CaptureReversalRequest{Xid: "no-such-xid", CaptureId: "c", Amount: 1, Currency: "EUR"},
		&setpb.CreditReversalRequest{Xid: "no-such-xid", CreditId: "c", Amount: 1, Currency: "EUR"},
		&setpb.GatewayInquiryRequest{Xid: "no-such-xid"},
	} {
		_, err := m.SendLifecycle(ctx, req)
		refused(t, err, setpb.Reason_UNKNOWN_TRANSACTION, codes.NotFound)
	}

	// Another merchant presenting shop-1's token, for shop-1's XID.
	ent2, err := e.RegisterEntity(ctx, pki.RoleMerchant, "shop-2", e.merTok)
	require.NoError(t, err)
	db2, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "m2.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db2.Close() })
	m2, err := e.NewMerchant(ctx, ent2, db2, system.LocalGateway{G: e.Gateway})
	require.NoError(t, err)
	_, err = m2.SendLifecycle(ctx, &setpb.CaptureRequest{Xid: b, Amount: 1_00, Currency: "EUR", CaptureToken: orderA.CaptureToken})
	refused(t, err, setpb.Reason_MERCHANT_MISMATCH, codes.PermissionDenied)
	_, err = m2.SendLifecycle(ctx, &setpb.GatewayInquiryRequest{Xid: b})
	refused(t, err, setpb.Reason_UNKNOWN_TRANSACTION, codes.NotFound)

	// Past the capture period (a gateway whose clock is 8 days ahead).
	late, err := e.NewGateway(e.GatewayDB, clock.NewManual(time.Now().Add(8*24*time.Hour)).Now)
	require.NoError(t, err)
	mLate, err := e.NewMerchant(ctx, e.MerchantEnt, e.MerchantDB, system.LocalGateway{G: late})
	require.NoError(t, err)
	_, err = mLate.Capture(ctx, merchant.LifecycleInput{XID: b, Amount: 1_00})
	refused(t, err, setpb.Reason_AUTH_EXPIRED, codes.FailedPrecondition)
	_, err = mLate.ReverseAuthorization(ctx, merchant.LifecycleInput{XID: b})
	refused(t, err, setpb.Reason_AUTH_EXPIRED, codes.FailedPrecondition)
	_, err = mLate.Credit(ctx, merchant.LifecycleInput{XID: b, Amount: 1_00})
	refused(t, err, setpb.Reason_AUTH_EXPIRED, codes.FailedPrecondition)

	assert.Equal(t, int64(0), auth(t, e, b).CapturedTotal, "nothing refused changed anything")
}

func testLifecycleRetriesAndReplays(t *testing.T, e *env) {
	ctx := context.Background()
	m := e.Merchant
	xid := buy(t, e, 0, "book")
	in := merchant.LifecycleInput{RRPID: "cap-x", XID: xid, Amount: 7_00}

	_, err := e.GatewayDB.ChainAudit(ctx) // PostgreSQL links audit records after commit
	require.NoError(t, err)
	before, err := e.GatewayDB.VerifyAudit(ctx)
	require.NoError(t, err)
	// The same capture ten times at once: one capture, ten identical answers.
	const n = 10
	answers := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := m.Capture(ctx, in)
			errs[i] = err
			if err == nil {
				answers[i] = r.Envelope
			}
		}()
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		assert.Equal(t, answers[0], answers[i], "answer %d", i)
	}
	a := auth(t, e, xid)
	assert.Equal(t, int64(7_00), a.CapturedTotal)
	// Audited: ten openings of the request (one decided, nine answered from the
	// store) and one signature.
	_, err = e.GatewayDB.ChainAudit(ctx)
	require.NoError(t, err)
	recs, err := e.GatewayDB.ListAudit(ctx, before, 100)
	require.NoError(t, err)
	count := map[string]int{}
	for _, r := range recs {
		assert.Equal(t, xid, r.XID)
		count[r.Purpose+"|"+r.Details]++
	}
	assert.Equal(t, map[string]int{"decrypt CAPTURE_REQUEST|": 1, "decrypt CAPTURE_REQUEST|retry answered from store": 9,
		"sign LIFECYCLE_RESPONSE|CAPTURE_REQUEST cap-x 700 EUR": 1}, count)
	_, stored, err := e.GatewayDB.StoredResponse(ctx, "gateway/lifecycle", lifecycleID("shop-1", "cap-x"))
	require.NoError(t, err)
	sa, err := setproto.ParseGatewayStoredAnswer(stored)
	require.NoError(t, err)
	assert.Equal(t, answers[0], sa.GetEnvelope(), "the answer sent is the answer stored")

	// Another request under the used pair ID is a replay; a refusal is remembered.
	_, err = m.Capture(ctx, merchant.LifecycleInput{RRPID: "cap-x", XID: xid, Amount: 8_00})
	refused(t, err, setpb.Reason_REPLAY, codes.AlreadyExists)
	_, err = m.Capture(ctx, merchant.LifecycleInput{RRPID: "cap-big", XID: xid, Amount: 99_00})
	refused(t, err, setpb.Reason_AMOUNT_EXCEEDED, codes.OutOfRange)
	_, err = m.Capture(ctx, merchant.LifecycleInput{RRPID: "cap-big", XID: xid, Amount: 99_00})
	refused(t, err, setpb.Reason_AMOUNT_EXCEEDED, codes.OutOfRange)
	var caps []store.Capture
	require.NoError(t, e.GatewayDB.View(ctx, func(ctx context.Context, tx store.Tx) error {
		caps, err = tx.ListCaptures(ctx, "shop-1", xid)
		return err
	}))
	assert.Len(t, caps, 1)
}

// Two gateway instances on two handles of one store (replicas): the same captures
// sent to both at once are captured once.
func testTwoGatewaysCaptureOnce(t *testing.T, e *env, dsn string) {
	ctx := context.Background()
	db2, err := store.Open(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db2.Close() })
	g2, err := e.NewGateway(db2, nil)
	require.NoError(t, err)
	m1, err := e.NewMerchant(ctx, e.MerchantEnt, e.MerchantDB, system.LocalGateway{G: e.Gateway})
	require.NoError(t, err)
	m2, err := e.NewMerchant(ctx, e.MerchantEnt, e.MerchantDB, system.LocalGateway{G: g2})
	require.NoError(t, err)
	var xids []string
	for range 3 {
		xids = append(xids, buy(t, e, 0, "book"))
	}
	type answer struct {
		env []byte
		err error
	}
	for i, xid := range xids {
		for part := range 2 {
			in := merchant.LifecycleInput{RRPID: fmt.Sprintf("cap-%d-%d", i, part), XID: xid, Amount: 12_50}
			var got [2]answer
			var wg sync.WaitGroup
			for j, m := range []*merchant.Merchant{m1, m2} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := m.Capture(ctx, in)
					got[j].err = err
					if err == nil {
						got[j].env = r.Envelope
					}
				}()
			}
			wg.Wait()
			require.NoError(t, got[0].err)
			require.NoError(t, got[1].err)
			assert.Equal(t, got[0].env, got[1].env, "both replicas answer with the stored bytes")
		}
		a := auth(t, e, xid)
		assert.Equal(t, int64(25_00), a.CapturedTotal)
		assert.Equal(t, store.AuthCaptured, a.Status)
	}
	_, err = e.GatewayDB.ChainAudit(ctx)
	require.NoError(t, err)
	rep, err := e.GatewayDB.CheckAudit(ctx)
	require.NoError(t, err)
	assert.Zero(t, rep.Unchained, "both replicas' records are in the chain")
}

func lifecycleID(merchantID, rrpid string) string {
	return gateway.LifecycleRequestID(merchantID, rrpid)
}
