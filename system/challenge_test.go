package system_test

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
	"github.com/setpay/setpay/wallet"
)

// splitMerchant sends the initiation to one merchant instance and the purchase
// request to another, as a load balancer in front of replicas may.
type splitMerchant struct{ init, purchase *merchant.Merchant }

func (s splitMerchant) PurchaseInit(ctx context.Context, in *setpb.PInitReq, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return s.init.PurchaseInit(ctx, in)
}

func (s splitMerchant) Purchase(ctx context.Context, in *setpb.PurchaseRequest, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return s.purchase.Purchase(ctx, in)
}

func (s splitMerchant) Inquiry(ctx context.Context, in *setpb.Signed, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return s.purchase.Inquiry(ctx, in)
}

// TestMerchantReplicasShareTheChallengeKey: the merchant's challenges come from the
// challenge key in its token, so another merchant instance on the same store holding
// the same token key (a replica, or the merchant after a restart) completes a
// purchase the first one initiated; an instance holding another key answers
// CHALLENGE_MISMATCH. New refuses a merchant without a challenge key.
func TestMerchantReplicasShareTheChallengeKey(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	replica, err := e.NewMerchant(ctx, e.MerchantEnt, e.MerchantDB, setpb.NewGatewayClient(e.GatewayConn))
	require.NoError(t, err)
	otherKey, err := e.merTok.GenerateSecretKey(ctx, hsm.KeySpec{Label: "another-challenge", Algorithm: hsm.HMACSHA256, Usage: hsm.UsageMAC})
	require.NoError(t, err)
	cfg := func(key merchant.MACKey) merchant.Config {
		ent := e.MerchantEnt
		return merchant.Config{Sign: ent.Sign, KXCert: ent.KXCert, KXKey: ent.KXKey, Trust: e.NewTrust(), Store: e.MerchantDB,
			Brand: system.Brand, GatewayKX: e.GatewayEnt.KXCert, GatewayChain: []*x509.Certificate{e.H.PCA.Certificate(), e.H.Brand.Certificate()},
			Gateway: setpb.NewGatewayClient(e.GatewayConn), Offers: systemtest.Offers(), ChallengeKey: key}
	}
	stranger, err := merchant.New(ctx, cfg(otherKey))
	require.NoError(t, err)
	_, err = merchant.New(ctx, cfg(nil))
	assert.ErrorContains(t, err, "challenge key is required")

	buy := func(t *testing.T, completer *merchant.Merchant) (*wallet.Receipt, error) {
		t.Helper()
		w, err := wallet.New(wallet.Config{Identity: e.Cardholders[systemtest.Alice].Identity, Trust: e.NewTrust(),
			Merchant: splitMerchant{init: e.Merchant, purchase: completer}, Brand: system.Brand})
		require.NoError(t, err)
		return w.Buy(ctx, "book")
	}
	t.Run("a replica with the same token key", func(t *testing.T) {
		rc, err := buy(t, replica)
		require.NoError(t, err)
		assert.True(t, rc.Approved(), "%s", rc.Result)
	})
	t.Run("an instance with another key", func(t *testing.T) {
		_, err := buy(t, stranger)
		requireRefused(t, err, setpb.Reason_CHALLENGE_MISMATCH)
	})
}
