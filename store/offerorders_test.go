package store

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestListOrdersOfOffer: the orders of one offer (merchant order IDs offer/XID) are
// listed newest first, never those of an offer whose ID merely starts the same way,
// and the shop's write-once order records read back through Idempotent.
func TestListOrdersOfOffer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		dh := sha256.Sum256([]byte("cart"))
		rows := []struct{ xid, moid string }{{"x0", "o-1/x0"}, {"x1", "o-10/x1"}, {"x2", "o-1/x2"}, {"x3", "o-1.x/x3"}, {"x4", "o-2/x4"}}
		require.NoError(t, s.Update(ctx, func(ctx context.Context, tx Tx) error {
			for i, r := range rows {
				if err := tx.InsertOrder(ctx, &Order{XID: r.xid, MerchantOrderID: r.moid, DescriptionHash: dh[:], Amount: 100,
					Currency: "EUR", State: OrderAuthorized, CreatedAt: t0.Add(time.Duration(i) * time.Minute)}); err != nil {
					return err
				}
			}
			return nil
		}))
		var got []Order
		require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
			var err error
			got, err = tx.ListOrdersOfOffer(ctx, "o-1", 10)
			return err
		}))
		var xids []string
		for _, o := range got {
			xids = append(xids, o.XID)
		}
		assert.Equal(t, []string{"x2", "x0"}, xids)
		err := s.View(ctx, func(ctx context.Context, tx Tx) error {
			_, err := tx.ListOrdersOfOffer(ctx, "o-1", 0)
			return err
		})
		assert.ErrorIs(t, err, ErrInvalid)
	})
}
