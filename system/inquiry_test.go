package system_test

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/setpay/setpay/internal/clock"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
	"github.com/setpay/setpay/wallet"
)

// inProcessMerchant is a setpb.MerchantClient calling a merchant directly.
type inProcessMerchant struct{ m *merchant.Merchant }

func (d inProcessMerchant) PurchaseInit(ctx context.Context, in *setpb.PInitReq, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return d.m.PurchaseInit(ctx, in)
}

func (d inProcessMerchant) Purchase(ctx context.Context, in *setpb.PurchaseRequest, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return d.m.Purchase(ctx, in)
}

func (d inProcessMerchant) Inquiry(ctx context.Context, in *setpb.Signed, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return d.m.Inquiry(ctx, in)
}

// TestInquiryOnlyByTheOrdersCardholder: the state and amount of an order go only to
// the cardholder certificate that dual-signed its purchase. Another valid
// cardholder who knows the XID is told the order does not exist, like an unknown
// XID. A wallet whose certificates the merchant has not cached (a merchant
// restarted since the purchase, a wallet that never bought there) retries with its
// certificates and gets its answer.
func TestInquiryOnlyByTheOrdersCardholder(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	alice, err := e.Wallet(systemtest.Alice)
	require.NoError(t, err)
	r, err := alice.Buy(ctx, "book")
	require.NoError(t, err)
	require.True(t, r.Approved())

	inq, err := alice.Inquire(ctx, r.XID)
	require.NoError(t, err)
	assert.Equal(t, "authorized", inq.GetState())
	assert.Equal(t, r.Amount, inq.GetAmount())

	bob, err := e.Wallet(systemtest.Bob)
	require.NoError(t, err)
	_, err = bob.Inquire(ctx, r.XID)
	requireRefused(t, err, setpb.Reason_UNKNOWN_TRANSACTION)

	// A merchant restarted on the same store has an empty certificate cache.
	m2, err := e.NewMerchant(ctx, e.MerchantEnt, e.MerchantDB, setpb.NewGatewayClient(e.GatewayConn))
	require.NoError(t, err)
	for name, id := range map[string]int{"the order's cardholder": 0, "another cardholder": 1} {
		t.Run(name, func(t *testing.T) {
			w, err := wallet.New(wallet.Config{Identity: e.Cardholders[id].Identity, Trust: e.NewTrust(),
				Merchant: inProcessMerchant{m2}, Brand: system.Brand})
			require.NoError(t, err)
			inq, err := w.Inquire(ctx, r.XID)
			if id != 0 {
				requireRefused(t, err, setpb.Reason_UNKNOWN_TRANSACTION)
				return
			}
			require.NoError(t, err, "the wallet resends its certificates")
			assert.Equal(t, "authorized", inq.GetState())
		})
	}
}

// TestStaleInitiationRefused: the merchant keeps nothing between initiation and
// purchase request, so the XID itself carries its issue time (covered by chall_m):
// a purchase request later than InitValidity after its initiation is refused and
// nothing is stored; one in time creates the order.
func TestStaleInitiationRefused(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	clk := clock.NewManual(time.Now())
	ent := e.MerchantEnt
	m, err := merchant.New(ctx, merchant.Config{Sign: ent.Sign, KXCert: ent.KXCert, KXKey: ent.KXKey, Trust: e.NewTrust(),
		Store: e.MerchantDB, Brand: system.Brand, GatewayKX: e.GatewayEnt.KXCert,
		GatewayChain: []*x509.Certificate{e.H.PCA.Certificate(), e.H.Brand.Certificate()},
		Gateway:      setpb.NewGatewayClient(e.GatewayConn), Offers: systemtest.Offers(), ChallengeKey: e.ChallengeKey, Clock: clk.Now, InitValidity: time.Hour})
	require.NoError(t, err)
	w, err := wallet.New(wallet.Config{Identity: e.Cardholders[systemtest.Alice].Identity, Trust: e.NewTrust(), Merchant: inProcessMerchant{m}, Brand: system.Brand})
	require.NoError(t, err)

	stale, err := w.Start(ctx, "book")
	require.NoError(t, err)
	staleReq, err := w.Prepare(stale)
	require.NoError(t, err)
	fresh, err := w.Start(ctx, "book")
	require.NoError(t, err)
	clk.Add(61 * time.Minute)
	_, err = w.Send(ctx, stale, staleReq)
	requireRefused(t, err, setpb.Reason_UNKNOWN_TRANSACTION)
	err = e.MerchantDB.View(ctx, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.GetOrder(ctx, stale.OI.GetXid())
		return err
	})
	assert.ErrorIs(t, err, store.ErrNotFound, "nothing stored for a stale initiation")

	_, err = w.Send(ctx, fresh, func() *setpb.PurchaseRequest {
		clk.Add(-2 * time.Minute) // fresh was issued 59 minutes ago
		r, err := w.Prepare(fresh)
		require.NoError(t, err)
		return r
	}())
	require.NoError(t, err)
}
