package store

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAuthorizationRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		want := testAuth(t, "m1", "x1", 12345)
		want.DeclineReason = ""
		insertAuth(t, s, want)
		got := getAuth(t, s, "m1", "x1")
		assert.Equal(t, want, got)

		err := s.Update(ctx, func(ctx context.Context, tx Tx) error {
			return tx.InsertAuthorization(ctx, testAuth(t, "m1", "x1", 1))
		})
		assert.ErrorIs(t, err, ErrConflict, "duplicate xid per merchant")
		insertAuth(t, s, testAuth(t, "m2", "x1", 1)) // same xid, other merchant

		require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
			_, err := tx.GetAuthorization(ctx, "m1", "nope")
			assert.ErrorIs(t, err, ErrNotFound)
			return nil
		}))
	})
}

func TestAuthorizationValidation(t *testing.T) {
	s := openTestSQLite(t)
	tests := []struct {
		name   string
		mutate func(a *Authorization)
	}{
		{"full PAN as mask", func(a *Authorization) { a.PANMask = "4111111111111111" }},
		{"digits in mask middle", func(a *Authorization) { a.PANMask = "411111*1****1111" }},
		{"BIN in mask", func(a *Authorization) { a.PANMask = "411111******1111" }},
		{"no PAN hash key", func(a *Authorization) { a.PANHashKey = "" }},
		{"legacy PAN hash key", func(a *Authorization) { a.PANHashKey = LegacyPANHashKey }},
		{"short PAN hash", func(a *Authorization) { a.PANHash = a.PANHash[:16] }},
		{"lower-case currency", func(a *Authorization) { a.Currency = "eur" }},
		{"negative amount", func(a *Authorization) { a.Amount = -1 }},
		{"authorized above requested", func(a *Authorization) { a.AuthorizedAmount = a.Amount + 1 }},
		{"bad status", func(a *Authorization) { a.Status = "maybe" }},
		{"bad expiry", func(a *Authorization) { a.CardExpiry = "202813" }},
		{"no merchant", func(a *Authorization) { a.MerchantID = "" }},
		{"no times", func(a *Authorization) { a.ExpiresAt = time.Time{} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := testAuth(t, "m1", "x1", 100)
			tc.mutate(a)
			err := s.Update(context.Background(), func(ctx context.Context, tx Tx) error {
				return tx.InsertAuthorization(ctx, a)
			})
			assert.ErrorIs(t, err, ErrInvalid)
			assert.NotContains(t, err.Error(), "4111111111111111", "no PAN in errors")
		})
	}
}

func TestPANHelpers(t *testing.T) {
	m, err := MaskPAN("5500000000000004")
	require.NoError(t, err)
	assert.Equal(t, "************0004", m)
	assert.True(t, validMask(m))
	_, err = MaskPAN("55000000000x0004")
	assert.ErrorIs(t, err, ErrInvalid)
	h1, err := PANHash(testPANKey, "5500000000000004")
	require.NoError(t, err)
	h2, err := PANHash([]byte("another-key-0123456789"), "5500000000000004")
	require.NoError(t, err)
	assert.Len(t, h1, 32)
	assert.NotEqual(t, h1, h2, "keyed")
	_, err = PANHash([]byte("short"), "5500000000000004")
	assert.ErrorIs(t, err, ErrInvalid)
}

func TestCaptureRules(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(a *Authorization)
		capture Capture
		wantErr error
	}{
		{"above authorized", nil, Capture{Amount: 101, Currency: "EUR"}, ErrLimitExceeded},
		{"authorized less than requested", func(a *Authorization) { a.AuthorizedAmount = 50 },
			Capture{Amount: 51, Currency: "EUR"}, ErrLimitExceeded},
		{"wrong currency", nil, Capture{Amount: 10, Currency: "USD"}, ErrConflict},
		{"declined", func(a *Authorization) { a.Status, a.AuthorizedAmount = AuthDeclined, 0 },
			Capture{Amount: 1, Currency: "EUR"}, ErrConflict},
		{"expired", nil, Capture{Amount: 10, Currency: "EUR", CreatedAt: t0.Add(8 * 24 * time.Hour)}, ErrExpired},
		{"unknown xid", nil, Capture{XID: "nope", Amount: 10, Currency: "EUR"}, ErrNotFound},
		{"zero amount", nil, Capture{Amount: 0, Currency: "EUR"}, ErrInvalid},
		{"unknown batch", nil, Capture{Amount: 10, Currency: "EUR", BatchID: "b?"}, ErrNotFound},
		{"exact amount", nil, Capture{Amount: 100, Currency: "EUR"}, nil},
	}
	forEachBackend(t, func(t *testing.T, s *Store) {
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				ctx := context.Background()
				a := testAuth(t, "m1", "x"+string(rune('a'+i)), 100)
				if tc.setup != nil {
					tc.setup(a)
				}
				insertAuth(t, s, a)
				c := tc.capture
				c.MerchantID, c.CaptureID = "m1", "c-"+a.XID
				if c.XID == "" {
					c.XID = a.XID
				}
				if c.CreatedAt.IsZero() {
					c.CreatedAt = t0.Add(time.Hour)
				}
				err := s.Update(ctx, func(ctx context.Context, tx Tx) error {
					_, err := tx.InsertCapture(ctx, &c)
					return err
				})
				after := getAuth(t, s, "m1", a.XID)
				if tc.wantErr != nil {
					assert.ErrorIs(t, err, tc.wantErr)
					assert.Equal(t, int64(0), after.CapturedTotal, "nothing captured")
					return
				}
				require.NoError(t, err)
				assert.Equal(t, c.Amount, after.CapturedTotal)
			})
		}
	})
}

func TestCaptureCreditReverseLifecycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		insertAuth(t, s, testAuth(t, "m1", "x1", 1000))
		require.NoError(t, s.Update(ctx, func(ctx context.Context, tx Tx) error {
			a, err := tx.InsertCapture(ctx, &Capture{MerchantID: "m1", CaptureID: "c1", XID: "x1", Amount: 300,
				Currency: "EUR", CreatedAt: t0})
			require.NoError(t, err)
			assert.Equal(t, AuthPartiallyCaptured, a.Status)

			_, err = tx.InsertCapture(ctx, &Capture{MerchantID: "m1", CaptureID: "c1", XID: "x1", Amount: 1,
				Currency: "EUR", CreatedAt: t0})
			assert.ErrorIs(t, err, ErrConflict, "duplicate capture ID")

			_, err = tx.ReverseAuthorization(ctx, "m1", "x1", 701)
			assert.ErrorIs(t, err, ErrLimitExceeded, "cannot reverse below captured")
			a, err = tx.ReverseAuthorization(ctx, "m1", "x1", 500)
			require.NoError(t, err)
			assert.Equal(t, int64(500), a.AuthorizedAmount)
			assert.Equal(t, AuthPartiallyCaptured, a.Status)

			a, err = tx.InsertCapture(ctx, &Capture{MerchantID: "m1", CaptureID: "c2", XID: "x1", Amount: 200,
				Currency: "EUR", Status: CaptureSettled, CreatedAt: t0.Add(time.Second)})
			require.NoError(t, err)
			assert.Equal(t, AuthCaptured, a.Status)
			assert.Equal(t, int64(500), a.CapturedTotal)

			_, err = tx.InsertCredit(ctx, &Credit{MerchantID: "m1", CreditID: "r1", XID: "x1", Amount: 501,
				Currency: "EUR", CreatedAt: t0})
			assert.ErrorIs(t, err, ErrLimitExceeded, "credit above captured")
			a, err = tx.InsertCredit(ctx, &Credit{MerchantID: "m1", CreditID: "r1", XID: "x1", Amount: 120,
				Currency: "EUR", CreatedAt: t0})
			require.NoError(t, err)
			assert.Equal(t, int64(120), a.CreditedTotal)

			cs, err := tx.ListCaptures(ctx, "m1", "x1")
			require.NoError(t, err)
			require.Len(t, cs, 2)
			assert.Equal(t, "c1", cs[0].CaptureID)
			assert.Equal(t, CaptureAccepted, cs[0].Status)
			assert.Equal(t, CaptureSettled, cs[1].Status)
			cr, err := tx.GetCredit(ctx, "m1", "r1")
			require.NoError(t, err)
			assert.Equal(t, int64(120), cr.Amount)
			crs, err := tx.ListCredits(ctx, "m1", "x1")
			require.NoError(t, err)
			assert.Len(t, crs, 1)
			c, err := tx.GetCapture(ctx, "m1", "c2")
			require.NoError(t, err)
			assert.Equal(t, t0.Add(time.Second), c.CreatedAt)
			return nil
		}))

		// Full reversal of an uncaptured authorization.
		insertAuth(t, s, testAuth(t, "m1", "x2", 80))
		require.NoError(t, s.Update(ctx, func(ctx context.Context, tx Tx) error {
			a, err := tx.ReverseAuthorization(ctx, "m1", "x2", 80)
			require.NoError(t, err)
			assert.Equal(t, AuthReversed, a.Status)
			_, err = tx.ReverseAuthorization(ctx, "m1", "x2", 1)
			assert.ErrorIs(t, err, ErrConflict)
			_, err = tx.InsertCapture(ctx, &Capture{MerchantID: "m1", CaptureID: "c9", XID: "x2", Amount: 1,
				Currency: "EUR", CreatedAt: t0})
			assert.ErrorIs(t, err, ErrConflict, "reversed cannot be captured")
			return nil
		}))
	})
}

func TestSetAuthorizationStatus(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		insertAuth(t, s, testAuth(t, "m1", "x1", 10))
		err := s.Update(ctx, func(ctx context.Context, tx Tx) error {
			return tx.SetAuthorizationStatus(ctx, "m1", "x1", AuthAuthorized, AuthExpired)
		})
		require.NoError(t, err)
		err = s.Update(ctx, func(ctx context.Context, tx Tx) error {
			return tx.SetAuthorizationStatus(ctx, "m1", "x1", AuthAuthorized, AuthReversed)
		})
		assert.ErrorIs(t, err, ErrConflict)
		err = s.Update(ctx, func(ctx context.Context, tx Tx) error {
			return tx.SetAuthorizationStatus(ctx, "m1", "nope", AuthAuthorized, AuthReversed)
		})
		assert.ErrorIs(t, err, ErrNotFound)
		assert.Equal(t, AuthExpired, getAuth(t, s, "m1", "x1").Status)
	})
}

func TestBatches(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		eur := testAuth(t, "m1", "x1", 1000)
		usd := testAuth(t, "m1", "x2", 1000)
		usd.Currency = "USD"
		insertAuth(t, s, eur)
		insertAuth(t, s, usd)
		require.NoError(t, s.Update(ctx, func(ctx context.Context, tx Tx) error {
			require.NoError(t, tx.OpenBatch(ctx, &Batch{MerchantID: "m1", BatchID: "b1", OpenedAt: t0}))
			assert.ErrorIs(t, tx.OpenBatch(ctx, &Batch{MerchantID: "m1", BatchID: "b1", OpenedAt: t0}), ErrConflict)
			for i, c := range []Capture{
				{CaptureID: "c1", XID: "x1", Amount: 100, Currency: "EUR"},
				{CaptureID: "c2", XID: "x1", Amount: 250, Currency: "EUR"},
				{CaptureID: "c3", XID: "x2", Amount: 70, Currency: "USD"},
				{CaptureID: "c4", XID: "x2", Amount: 5, Currency: "USD", BatchID: "-"}, // not in the batch
			} {
				c.MerchantID, c.CreatedAt = "m1", t0.Add(time.Duration(i)*time.Second)
				if c.BatchID == "-" {
					c.BatchID = ""
				} else {
					c.BatchID = "b1"
				}
				_, err := tx.InsertCapture(ctx, &c)
				require.NoError(t, err)
			}
			_, err := tx.InsertCredit(ctx, &Credit{MerchantID: "m1", CreditID: "r1", XID: "x1", Amount: 40,
				Currency: "EUR", BatchID: "b1", CreatedAt: t0})
			require.NoError(t, err)
			return nil
		}))
		var totals []BatchTotal
		require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
			var err error
			totals, err = tx.BatchTotals(ctx, "m1", "b1")
			return err
		}))
		assert.Equal(t, []BatchTotal{
			{Currency: "EUR", Type: TxnCapture, Count: 2, Amount: 350},
			{Currency: "EUR", Type: TxnCredit, Count: 1, Amount: 40},
			{Currency: "USD", Type: TxnCapture, Count: 1, Amount: 70},
		}, totals)

		require.NoError(t, s.Update(ctx, func(ctx context.Context, tx Tx) error {
			return tx.CloseBatch(ctx, "m1", "b1", t0.Add(time.Hour))
		}))
		require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
			b, err := tx.GetBatch(ctx, "m1", "b1")
			require.NoError(t, err)
			assert.Equal(t, &Batch{MerchantID: "m1", BatchID: "b1", Status: BatchClosed, ItemCount: 4,
				OpenedAt: t0, ClosedAt: t0.Add(time.Hour)}, b)
			_, err = tx.GetBatch(ctx, "m1", "b2")
			assert.ErrorIs(t, err, ErrNotFound)
			_, err = tx.BatchTotals(ctx, "m1", "b2")
			assert.ErrorIs(t, err, ErrNotFound)
			return nil
		}))
		err := s.Update(ctx, func(ctx context.Context, tx Tx) error {
			return tx.CloseBatch(ctx, "m1", "b1", t0.Add(time.Hour))
		})
		assert.ErrorIs(t, err, ErrConflict, "close twice")
		err = s.Update(ctx, func(ctx context.Context, tx Tx) error {
			_, err := tx.InsertCapture(ctx, &Capture{MerchantID: "m1", CaptureID: "c5", XID: "x1", Amount: 1,
				Currency: "EUR", BatchID: "b1", CreatedAt: t0})
			return err
		})
		assert.ErrorIs(t, err, ErrConflict, "closed batch takes no items")
		assert.Equal(t, int64(350), getAuth(t, s, "m1", "x1").CapturedTotal)
	})
}
