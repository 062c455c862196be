// Package lifecycletest tests the payment lifecycle after authorization (capture,
// reversals, credit, batches, inquiry) end to end on a test bed, on SQLite and on
// PostgreSQL when SETPAY_TEST_PG_DSN is set. It is its own test binary so each stays
// within its time budget.
package lifecycletest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/system"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

var cards = []system.CardSpec{
	{Name: "alice", PAN: "4111111111111111", Expiry: "203012", Balance: 1000_00},
}

var offers = []merchant.Offer{
	{ID: "book", Description: "The SET book, hardcover", Amount: 25_00, Currency: "EUR"},
	{ID: "coffee", Description: "Coffee beans 1kg", Amount: 15_00, Currency: "EUR", Sale: true},
}

type env struct {
	*system.Bed
	merTok *hsm.Token
}

// newBedOn builds a bed whose gateway store is gatewayDSN.
func newBedOn(t testing.TB, gatewayDSN string) *env {
	t.Helper()
	tok := softhsmtest.NewToken(t)
	merTok := softhsmtest.NewToken(t)
	b, err := system.Build(context.Background(), system.Config{
		CARoot: tok, CA: tok, Gateway: softhsmtest.NewToken(t), Merchant: merTok, Wallet: tok, TLS: tok,
		GatewayDSN: gatewayDSN, MerchantDSN: "sqlite:" + filepath.Join(t.TempDir(), "mer.db"),
		GatewayID: "gw-1", MerchantID: "shop-1", Offers: offers, Cards: cards,
	}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return &env{Bed: b, merTok: merTok}
}
