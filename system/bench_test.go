package system_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/system"
)

// BenchmarkPurchase is one purchase end to end: initiation, dual-signed request,
// authorization at the gateway, signed answers, over loopback gRPC with TLS, every
// private-key operation in SoftHSM tokens, SQLite stores.
func BenchmarkPurchase(b *testing.B) {
	e := newBed(b)
	ch, err := e.IssueCardholder(context.Background(), e.walTok, system.CardSpec{PAN: "4111111111111111", Expiry: "203012"})
	require.NoError(b, err)
	w, err := e.WalletFor(ch.Identity)
	require.NoError(b, err)
	ctx := context.Background()
	for b.Loop() {
		r, err := w.Buy(ctx, "book")
		if err != nil {
			b.Fatal(err)
		}
		_ = r
	}
}
