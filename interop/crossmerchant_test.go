package interop_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system/systemtest"
)

// lastAuthorization is the newest authorization answer the gateway sent: its XID and
// capture token (empty for a sale).
func lastAuthorization(t *testing.T, b *bed) *setpb.AuthResponse {
	t.Helper()
	resps := b.gwRec.Responses()
	for i := len(resps) - 1; i >= 0; i-- {
		env := resps[i].(*setpb.Enveloped).GetCms()
		if envelopeKind(t, env) != setpb.ContentKind_AUTH_RESPONSE {
			continue
		}
		inner, err := setproto.Unseal(env, setpb.ContentKind_AUTH_RESPONSE, b.MerchantEnt.KXCert, b.MerchantEnt.KXKey)
		require.NoError(t, err)
		sd, err := cms.ParseSignedData(inner)
		require.NoError(t, err)
		r, err := setproto.ParseAuthResponse(sd.Content())
		require.NoError(t, err)
		return r
	}
	t.Fatal("no authorization answered")
	return nil
}

// testCrossMerchant: a second, properly registered merchant acts on the first
// merchant's transactions through the lifecycle methods. The gateway must refuse
// every one and change no transaction. (These requests are authentic, so the gateway
// may keep its signed refusal per pair ID and audit the key operations behind it.)
func testCrossMerchant(t *testing.T, b *bed) {
	ctx := context.Background()
	b.buy(t, systemtest.Alice, "book")
	auth := lastAuthorization(t, b)
	require.NotEmpty(t, auth.GetCaptureToken())
	b.buy(t, systemtest.Alice, "coffee")
	sale := lastAuthorization(t, b)
	require.True(t, sale.GetCaptured())

	ent, err := b.RegisterEntity(ctx, pki.RoleMerchant, "shop-2", b.merTok)
	require.NoError(t, err)
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "shop2.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	other, err := b.NewMerchant(ctx, ent, db, setpb.NewGatewayClient(b.GatewayConn))
	require.NoError(t, err)

	cases := []struct {
		name string
		req  setproto.LifecycleRequest
	}{
		{"capture with the other merchant's token", &setpb.CaptureRequest{Xid: auth.GetXid(), Amount: 1_00, Currency: "EUR", CaptureToken: auth.GetCaptureToken()}},
		{"reverse the other merchant's authorization", &setpb.AuthReversalRequest{Xid: auth.GetXid(), Currency: "EUR"}},
		{"credit the other merchant's sale", &setpb.CreditRequest{Xid: sale.GetXid(), Amount: 1_00, Currency: "EUR"}},
		{"inquire about the other merchant's sale", &setpb.GatewayInquiryRequest{Xid: sale.GetXid()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := b.snapshot(t)
			_, err := other.SendLifecycle(ctx, tc.req)
			require.Error(t, err, "the gateway let shop-2 act on shop-1's transaction")
			r := setproto.ReasonOf(err)
			t.Logf("refused: %s", r)
			assert.Contains(t, []setpb.Reason{setpb.Reason_UNKNOWN_TRANSACTION, setpb.Reason_MERCHANT_MISMATCH}, r, "%v", err)
			requireSameBusiness(t, before.gwRows, countRows(t, b.gwRO))
		})
	}
	t.Run("capture token of another transaction", func(t *testing.T) {
		b.buy(t, systemtest.Alice, "book")
		second := lastAuthorization(t, b)
		before := b.snapshot(t)
		_, err := b.Merchant.SendLifecycle(ctx, &setpb.CaptureRequest{Xid: second.GetXid(), Amount: 1_00, Currency: "EUR", CaptureToken: auth.GetCaptureToken()})
		require.Error(t, err, "a capture token opened another authorization")
		t.Logf("refused: %v", err)
		assert.NotEqual(t, setpb.Reason_INTERNAL, setproto.ReasonOf(err), "%v", err)
		requireSameBusiness(t, before.gwRows, countRows(t, b.gwRO))
	})
}

// requireSameBusiness compares the gateway's transaction tables, leaving out the
// audit chain and the stored answers of refused requests.
func requireSameBusiness(t *testing.T, before, after map[string]int64) {
	t.Helper()
	for _, m := range []map[string]int64{before, after} {
		delete(m, "audit_log")
		delete(m, "audit_head")
		delete(m, "processed_requests")
	}
	assert.Equal(t, before, after, "gateway transaction rows")
}
