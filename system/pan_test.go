package system_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
)

// TestGatewayStoresLastFourAndATokenKeyedHash: what the gateway writes about a card is
// its last 4 digits and a hash the token's MAC key made, named by the key's URI; one
// card gives one hash (so its authorizations still link), and the database files hold
// neither the PAN nor its first 6 digits.
func TestGatewayStoresLastFourAndATokenKeyedHash(t *testing.T) {
	ctx := context.Background()
	caTok, tok := softhsmtest.NewToken(t), softhsmtest.NewToken(t)
	dir := t.TempDir()
	e, err := system.Build(ctx, system.Config{
		CARoot: caTok, CA: caTok, Gateway: softhsmtest.NewToken(t), Merchant: softhsmtest.NewToken(t), Wallet: tok, TLS: tok,
		GatewayDSN: "sqlite:" + filepath.Join(dir, "gw.db"), MerchantDSN: "sqlite:" + filepath.Join(dir, "mer.db"),
		GatewayID: "gw-1", MerchantID: "shop-1", Offers: systemtest.Offers(), Cards: cards,
	}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	buy := func(card int) *store.Authorization {
		w, err := e.Wallet(card)
		require.NoError(t, err)
		r, err := w.Buy(ctx, "book")
		require.NoError(t, err)
		var a *store.Authorization
		require.NoError(t, e.GatewayDB.View(ctx, func(ctx context.Context, tx store.Tx) error {
			a, err = tx.GetAuthorization(ctx, "shop-1", r.XID)
			return err
		}))
		return a
	}
	alice1, alice2, bob := buy(systemtest.Alice), buy(systemtest.Alice), buy(systemtest.Bob)
	for name, c := range map[string]struct {
		a   *store.Authorization
		pan string
	}{"alice": {alice1, cards[systemtest.Alice].PAN}, "alice again": {alice2, cards[systemtest.Alice].PAN}, "bob": {bob, cards[systemtest.Bob].PAN}} {
		assert.Equal(t, strings.Repeat("*", len(c.pan)-4)+c.pan[len(c.pan)-4:], c.a.PANMask, name)
		assert.Equal(t, e.PANKey.URI(), c.a.PANHashKey, name)
		assert.Contains(t, c.a.PANHashKey, "type=secret-key", name)
		want, err := e.PANHasher.HashPAN(ctx, c.pan)
		require.NoError(t, err)
		assert.Equal(t, want, c.a.PANHash, "%s: the hash is the token's MAC", name)
	}
	assert.Equal(t, alice1.PANHash, alice2.PANHash)
	assert.NotEqual(t, alice1.PANHash, bob.PANHash)

	// The files SQLite wrote (database, WAL) carry no PAN and no BIN-bearing mask.
	require.NoError(t, e.GatewayDB.Close())
	files, err := filepath.Glob(filepath.Join(dir, "gw.db*"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, c := range cards {
			assert.False(t, bytes.Contains(b, []byte(c.PAN)), "%s holds a PAN", f)
			assert.False(t, bytes.Contains(b, []byte(c.PAN[:6]+"*")), "%s holds a mask with the BIN", f)
		}
	}
}
