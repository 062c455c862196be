package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestListOrders: the merchant's order list is newest first, filtered by state,
// bounded by its limit, and refuses a limit that is not positive.
func TestListOrders(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		dh := sha256.Sum256([]byte("a book"))
		states := []OrderState{OrderAuthorized, OrderCaptured, OrderAuthorized}
		require.NoError(t, s.Update(ctx, func(ctx context.Context, tx Tx) error {
			for i, st := range states {
				if err := tx.InsertOrder(ctx, &Order{XID: fmt.Sprintf("x%d", i), MerchantOrderID: fmt.Sprintf("book/x%d", i),
					DescriptionHash: dh[:], Amount: int64(100 * (i + 1)), Currency: "EUR", State: st,
					CreatedAt: t0.Add(time.Duration(i) * time.Minute)}); err != nil {
					return err
				}
			}
			return nil
		}))
		xids := func(os []Order) []string {
			var out []string
			for _, o := range os {
				out = append(out, o.XID)
			}
			return out
		}
		cases := []struct {
			name  string
			state OrderState
			limit int
			want  []string
		}{
			{"all, newest first", "", 10, []string{"x2", "x1", "x0"}},
			{"by state", OrderAuthorized, 10, []string{"x2", "x0"}},
			{"limited", "", 2, []string{"x2", "x1"}},
			{"none in state", OrderRefunded, 10, nil},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var got []Order
				require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
					var err error
					got, err = tx.ListOrders(ctx, tc.state, tc.limit)
					return err
				}))
				assert.Equal(t, tc.want, xids(got))
			})
		}
		var got []Order
		require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
			var err error
			got, err = tx.ListOrders(ctx, "", 1)
			return err
		}))
		require.Len(t, got, 1)
		assert.Equal(t, Order{XID: "x2", MerchantOrderID: "book/x2", DescriptionHash: dh[:], Amount: 300, Currency: "EUR",
			State: OrderAuthorized, CreatedAt: t0.Add(2 * time.Minute), UpdatedAt: t0.Add(2 * time.Minute)}, got[0])
		err := s.View(ctx, func(ctx context.Context, tx Tx) error { _, err := tx.ListOrders(ctx, "", 0); return err })
		assert.ErrorIs(t, err, ErrInvalid)
	})
}
