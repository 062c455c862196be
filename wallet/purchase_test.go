package wallet_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
	"github.com/setpay/setpay/wallet"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

// TestWalletMakesSeveralPurchases: one Wallet buys again and again, as the wallet UI
// does in one process. From the second purchase on the wallet announces the MCA, the
// PCA and the gateway's certificate as known, so the merchant names them by
// thumbprint only; the wallet must find the gateway's issuing CA (PCA) among those
// references. Its trust holds only its own chain (CCA, brand), as `wallet buy` and
// `wallet ui` build it.
func TestWalletMakesSeveralPurchases(t *testing.T) {
	caTok, tok := softhsmtest.NewToken(t), softhsmtest.NewToken(t)
	dir := t.TempDir()
	ctx := context.Background()
	b, err := system.Build(ctx, system.Config{
		CARoot: caTok, CA: caTok, Gateway: softhsmtest.NewToken(t), Merchant: softhsmtest.NewToken(t), Wallet: tok, TLS: tok,
		GatewayDSN: "sqlite:" + filepath.Join(dir, "gw.db"), MerchantDSN: "sqlite:" + filepath.Join(dir, "mer.db"),
		GatewayID: "gw-1", MerchantID: "shop-1", Offers: systemtest.Offers(), Cards: systemtest.Cards(),
	}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	id := b.Cardholders[systemtest.Alice].Identity
	w, err := wallet.New(wallet.Config{Identity: id, Trust: &setproto.Trust{Verifier: b.Verifier, Intermediates: id.Chain, Cache: pki.NewCertCache(64)},
		Merchant: setpb.NewMerchantClient(b.MerchantConn), Brand: system.Brand})
	require.NoError(t, err)
	for i, offer := range []string{"book", "coffee", "book"} {
		r, err := w.Buy(ctx, offer)
		require.NoError(t, err, "purchase %d (%s)", i+1, offer)
		assert.True(t, r.Approved(), "purchase %d: %s", i+1, r.Result)
		assert.Equal(t, "gw-1", r.Gateway)
		inq, err := w.Inquire(ctx, r.XID)
		require.NoError(t, err, "inquiry after purchase %d", i+1)
		assert.Equal(t, r.XID, inq.GetXid())
	}
}
