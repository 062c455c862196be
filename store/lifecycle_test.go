package store

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReversalsAndBatchItems(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		insertAuth(t, s, testAuth(t, "m1", "x1", 1000))
		at := t0.Add(1)
		apply := func(fn func(tx Tx) error) error {
			return s.Update(ctx, func(ctx context.Context, tx Tx) error { return fn(tx) })
		}
		require.NoError(t, apply(func(tx Tx) error { return tx.OpenBatch(ctx, &Batch{MerchantID: "m1", BatchID: "b1", OpenedAt: at}) }))
		require.NoError(t, apply(func(tx Tx) error {
			_, err := tx.InsertCapture(ctx, &Capture{MerchantID: "m1", CaptureID: "c1", XID: "x1", Amount: 600, Currency: "EUR", BatchID: "b1", CreatedAt: at})
			return err
		}))
		require.NoError(t, apply(func(tx Tx) error {
			_, err := tx.InsertCredit(ctx, &Credit{MerchantID: "m1", CreditID: "r1", XID: "x1", Amount: 200, Currency: "EUR", BatchID: "b1", CreatedAt: at})
			return err
		}))
		rev := func(id string, typ TxnType, target string, amount int64, batch string) error {
			return apply(func(tx Tx) error {
				_, err := tx.InsertReversal(ctx, &Reversal{MerchantID: "m1", ReversalID: id, XID: "x1", Type: typ, TargetID: target,
					Amount: amount, Currency: "EUR", BatchID: batch, CreatedAt: at})
				return err
			})
		}
		tests := []struct {
			id, target string
			typ        TxnType
			amount     int64
			want       error
		}{
			{"v1", "c1", TxnCaptureReversal, 500, ErrLimitExceeded}, // would leave 100 captured, 200 credited
			{"v2", "c1", TxnCaptureReversal, 700, ErrLimitExceeded}, // more than the capture
			{"v3", "nope", TxnCaptureReversal, 1, ErrNotFound},
			{"v4", "r1", TxnCreditReversal, 50, nil},
			{"v5", "r1", TxnCreditReversal, 151, ErrLimitExceeded},
			{"v6", "c1", TxnCaptureReversal, 400, nil},
			{"v7", "x1", TxnAuthReversal, 300, nil},
			{"v8", "x1", TxnAuthReversal, 600, ErrLimitExceeded}, // would leave less than captured
		}
		for _, tt := range tests {
			batch := "b1"
			if tt.typ == TxnAuthReversal {
				batch = ""
			}
			err := rev(tt.id, tt.typ, tt.target, tt.amount, batch)
			if tt.want == nil {
				assert.NoError(t, err, tt.id)
			} else {
				assert.ErrorIs(t, err, tt.want, tt.id)
			}
		}
		a := getAuth(t, s, "m1", "x1")
		assert.Equal(t, int64(700), a.AuthorizedAmount)
		assert.Equal(t, int64(200), a.CapturedTotal)
		assert.Equal(t, int64(150), a.CreditedTotal)
		assert.Equal(t, AuthPartiallyCaptured, a.Status)
		var items []BatchItem
		var totals []BatchTotal
		var revs []Reversal
		require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
			var err error
			if items, err = tx.ListBatchItems(ctx, "m1", "b1"); err != nil {
				return err
			}
			if revs, err = tx.ListReversals(ctx, "m1", "x1"); err != nil {
				return err
			}
			totals, err = tx.BatchTotals(ctx, "m1", "b1")
			return err
		}))
		assert.Len(t, items, 4)
		assert.Len(t, revs, 3)
		assert.Equal(t, []BatchTotal{
			{Currency: "EUR", Type: TxnCapture, Count: 1, Amount: 600},
			{Currency: "EUR", Type: TxnCaptureReversal, Count: 1, Amount: 400},
			{Currency: "EUR", Type: TxnCredit, Count: 1, Amount: 200},
			{Currency: "EUR", Type: TxnCreditReversal, Count: 1, Amount: 50},
		}, totals)
		var c *Capture
		require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
			var err error
			c, err = tx.GetCapture(ctx, "m1", "c1")
			return err
		}))
		assert.Equal(t, int64(400), c.ReversedAmount)
	})
}

func TestOrderCaptureTokenAndStoredResponse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		require.NoError(t, s.Update(ctx, func(ctx context.Context, tx Tx) error {
			if err := tx.InsertOrder(ctx, &Order{XID: "x1", MerchantOrderID: "o1", DescriptionHash: reqHash("d"), Amount: 5, Currency: "EUR", State: OrderCreated, CreatedAt: t0}); err != nil {
				return err
			}
			return tx.SetOrderCaptureToken(ctx, "x1", []byte("token"))
		}))
		require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
			o, err := tx.GetOrder(ctx, "x1")
			require.NoError(t, err)
			assert.Equal(t, []byte("token"), o.CaptureToken)
			return nil
		}))
		_, _, err := s.StoredResponse(ctx, "s", "r")
		assert.ErrorIs(t, err, ErrNotFound)
		_, _, err = s.Idempotent(ctx, "s", "r", reqHash("a"), func(context.Context, Tx) ([]byte, error) { return []byte("answer"), nil })
		require.NoError(t, err)
		for i := range 3 {
			_, err := s.AppendAudit(ctx, AuditRecord{Time: t0, Actor: "a", KeyURI: "pkcs11:object=k", Purpose: "p", Details: string(rune('a' + i))})
			require.NoError(t, err)
		}
		_, err = s.ChainAudit(ctx) // PostgreSQL links records after their commit
		require.NoError(t, err)
		recs, err := s.ListAudit(ctx, 1, 10)
		require.NoError(t, err)
		require.Len(t, recs, 2)
		assert.Equal(t, int64(2), recs[0].Seq)
		assert.Equal(t, "c", recs[1].Details)
		_, err = s.ListAudit(ctx, 0, 0)
		assert.ErrorIs(t, err, ErrInvalid)
		h, resp, err := s.StoredResponse(ctx, "s", "r")
		require.NoError(t, err)
		assert.Equal(t, reqHash("a"), h)
		assert.Equal(t, []byte("answer"), resp)
	})
}
