package system_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

// cards are the shared test cards; tests index them with systemtest.Alice, ...
var cards = systemtest.Cards()

type env struct {
	*system.Bed
	gwRec, merRec         *systemtest.Recorder
	caTok, merTok, walTok *hsm.Token
	decided               *decisions
}

// decisions collects what the gateway reports through Config.Decided.
type decisions struct {
	mu  sync.Mutex
	got []setpb.AuthResult
}

func (d *decisions) add(r setpb.AuthResult) { d.mu.Lock(); d.got = append(d.got, r); d.mu.Unlock() }

func (d *decisions) list() []setpb.AuthResult {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]setpb.AuthResult(nil), d.got...)
}

func newBed(t testing.TB) *env {
	t.Helper()
	caTok := softhsmtest.NewToken(t)
	tok := softhsmtest.NewToken(t)
	dir := t.TempDir()
	e := &env{gwRec: &systemtest.Recorder{}, merRec: &systemtest.Recorder{}, caTok: caTok, merTok: softhsmtest.NewToken(t), walTok: tok, decided: &decisions{}}
	b, err := system.Build(context.Background(), system.Config{
		CARoot: caTok, CA: caTok, Gateway: softhsmtest.NewToken(t), Merchant: e.merTok, Wallet: tok, TLS: tok,
		GatewayDSN: "sqlite:" + filepath.Join(dir, "gw.db"), MerchantDSN: "sqlite:" + filepath.Join(dir, "mer.db"),
		GatewayID: "gw-1", MerchantID: "shop-1", Offers: systemtest.Offers(), Cards: cards, GatewayDecided: e.decided.add,
	}, []grpc.ServerOption{e.gwRec.Option()}, []grpc.ServerOption{e.merRec.Option()})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	e.Bed = b
	return e
}

// requireRefused checks a gRPC status with a SET reason (directly or wrapped by the wallet).
func requireRefused(t *testing.T, err error, want setpb.Reason) {
	t.Helper()
	require.Error(t, err)
	assert.Equal(t, want.String(), setproto.ReasonOf(err).String(), "error: %v", err)
}

func TestPurchaseOutcomes(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	tests := []struct {
		card  int
		offer string
		want  setpb.AuthResult
	}{
		{0, "book", setpb.AuthResult_APPROVED},
		{0, "coffee", setpb.AuthResult_APPROVED},
		{1, "book", setpb.AuthResult_DECLINED_INSUFFICIENT_FUNDS},
		{2, "book", setpb.AuthResult_DECLINED_BLOCKED_CARD},
		{3, "book", setpb.AuthResult_DECLINED_EXPIRED_CARD},
		{4, "book", setpb.AuthResult_DECLINED_OVER_LIMIT},
	}
	for _, tt := range tests {
		t.Run(cards[tt.card].Name+"/"+tt.offer, func(t *testing.T) {
			w, err := e.Wallet(tt.card)
			require.NoError(t, err)
			before := len(e.decided.list())
			r, err := w.Buy(ctx, tt.offer)
			require.NoError(t, err)
			assert.Equal(t, tt.want, r.Result)
			assert.Equal(t, "shop-1", r.Merchant)
			assert.Equal(t, []setpb.AuthResult{tt.want}, e.decided.list()[before:], "the gateway reports each new decision once (metrics count these)")
			var a *store.Authorization
			require.NoError(t, e.GatewayDB.View(ctx, func(ctx context.Context, tx store.Tx) error {
				a, err = tx.GetAuthorization(ctx, "shop-1", r.XID)
				return err
			}))
			mask, err := store.MaskPAN(cards[tt.card].PAN)
			require.NoError(t, err)
			assert.Equal(t, mask, a.PANMask, "the gateway stores the last 4 digits only")
			var o *store.Order
			require.NoError(t, e.MerchantDB.View(ctx, func(ctx context.Context, tx store.Tx) error {
				o, err = tx.GetOrder(ctx, r.XID)
				return err
			}))
			inq, err := w.Inquire(ctx, r.XID)
			require.NoError(t, err)
			assert.Equal(t, string(o.State), inq.GetState())
			if tt.want != setpb.AuthResult_APPROVED {
				assert.Equal(t, store.AuthDeclined, a.Status)
				assert.Equal(t, merchant.StateDeclined, o.State)
				return
			}
			assert.Equal(t, r.Amount, a.AuthorizedAmount)
			assert.NotEmpty(t, r.AuthCode)
			if tt.offer == "coffee" { // a sale
				assert.True(t, r.Captured)
				assert.Equal(t, store.AuthCaptured, a.Status)
				assert.Equal(t, store.OrderCaptured, o.State)
			} else {
				assert.False(t, r.Captured)
				assert.Equal(t, store.AuthAuthorized, a.Status)
				assert.Equal(t, store.OrderAuthorized, o.State)
			}
		})
	}
	bal, ok := e.Ledger.Balance(cards[systemtest.Alice].PAN)
	require.True(t, ok)
	assert.Equal(t, cards[systemtest.Alice].Balance-25_00-15_00, bal)
}

func TestRetryGetsSameAnswerAndReplayIsRefused(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	w, err := e.Wallet(systemtest.Alice)
	require.NoError(t, err)
	s, err := w.Start(ctx, "book")
	require.NoError(t, err)
	req, err := w.Prepare(s)
	require.NoError(t, err)
	mc := setpb.NewMerchantClient(e.MerchantConn)
	first, err := mc.Purchase(ctx, req)
	require.NoError(t, err)
	again, err := mc.Purchase(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, first.GetCms(), again.GetCms(), "a retry gets the same answer bytes")
	r, err := w.VerifyResponse(ctx, s, again)
	require.NoError(t, err)
	assert.True(t, r.Approved())

	// The same purchase requested again under a new pair ID and fresh challenges, or
	// with the old challenges, is a replay.
	s.OI.Rrpid, s.PI.Rrpid = "new-pair-id", "new-pair-id"
	req2, err := w.Prepare(s)
	require.NoError(t, err)
	_, err = mc.Purchase(ctx, req2)
	requireRefused(t, err, setpb.Reason_REPLAY)
	assert.Equal(t, codes.AlreadyExists, status.Code(err))
	bal, _ := e.Ledger.Balance(cards[systemtest.Alice].PAN)
	assert.Equal(t, cards[systemtest.Alice].Balance-25_00, bal, "funds held once")
}
