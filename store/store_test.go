package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// captureFn captures amount on xid and answers with bytes that include a
// random nonce, so a replay that recomputed instead of returning the stored
// answer would be caught.
func captureFn(merchant, xid, captureID string, amount int64, calls *atomic.Int32) func(context.Context, Tx) ([]byte, error) {
	return func(ctx context.Context, tx Tx) ([]byte, error) {
		if calls != nil {
			calls.Add(1)
		}
		a, err := tx.InsertCapture(ctx, &Capture{MerchantID: merchant, CaptureID: captureID, XID: xid,
			Amount: amount, Currency: "EUR", CreatedAt: t0})
		if err != nil {
			return nil, err
		}
		nonce := make([]byte, 16)
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		return fmt.Appendf(nil, "captured %s total=%d status=%s nonce=%x", captureID, a.CapturedTotal, a.Status, nonce), nil
	}
}

func TestOpenRejectsBadDSN(t *testing.T) {
	for _, dsn := range []string{"", "mysql://x", "sqlite:", "sqlite::memory:", "sqlite:a.db?mode=ro"} {
		t.Run(dsn, func(t *testing.T) {
			_, err := Open(context.Background(), dsn)
			assert.ErrorIs(t, err, ErrInvalid)
		})
	}
}

func TestMigrationsIdempotentOnReopen(t *testing.T) {
	ctx := context.Background()
	ms, err := loadMigrations()
	require.NoError(t, err)
	newest, count := ms[len(ms)-1].version, len(ms)
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "setpay.db")
		for i := 0; i < 3; i++ {
			s, err := Open(ctx, "sqlite:"+path)
			require.NoError(t, err, "open #%d", i)
			v, err := s.SchemaVersion(ctx)
			require.NoError(t, err)
			assert.Equal(t, newest, v)
			var n int
			require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n))
			assert.Equal(t, count, n)
			if i == 0 {
				insertAuth(t, s, testAuth(t, "m1", "x1", 100))
			}
			assert.Equal(t, int64(100), getAuth(t, s, "m1", "x1").AuthorizedAmount, "data survives reopen")
			var mode string
			require.NoError(t, s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode))
			assert.Equal(t, "wal", mode)
			var fk int
			require.NoError(t, s.db.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk))
			assert.Equal(t, 1, fk)
			require.NoError(t, s.Close())
		}
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgSchemaDSN(t)
		// Several replicas starting at once must apply the migration once.
		var wg sync.WaitGroup
		stores := make([]*Store, 4)
		errs := make([]error, 4)
		for i := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stores[i], errs[i] = Open(ctx, dsn)
			}()
		}
		wg.Wait()
		for i := range stores {
			require.NoError(t, errs[i])
			t.Cleanup(func() { _ = stores[i].Close() })
		}
		s, err := Open(ctx, dsn)
		require.NoError(t, err)
		defer s.Close()
		var n int
		require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n))
		assert.Equal(t, count, n)
	})
}

func TestIdempotentRetryReturnsIdenticalBytes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		insertAuth(t, s, testAuth(t, "m1", "x1", 1000))
		var calls atomic.Int32
		fn := captureFn("m1", "x1", "c1", 400, &calls)
		first, replayed, err := s.Idempotent(ctx, "capture", "req-1", reqHash("capture x1 400"), fn)
		require.NoError(t, err)
		assert.False(t, replayed)
		for i := 0; i < 3; i++ {
			again, replayed, err := s.Idempotent(ctx, "capture", "req-1", reqHash("capture x1 400"), fn)
			require.NoError(t, err)
			assert.True(t, replayed)
			assert.Equal(t, first, again)
		}
		assert.Equal(t, int32(1), calls.Load(), "fn runs once")
		assert.Equal(t, int64(400), getAuth(t, s, "m1", "x1").CapturedTotal)

		// The same ID in another scope is a different request.
		_, replayed, err = s.Idempotent(ctx, "other", "req-1", reqHash("x"), func(context.Context, Tx) ([]byte, error) {
			return []byte("other"), nil
		})
		require.NoError(t, err)
		assert.False(t, replayed)

		// An empty answer is stored and replayed as empty, not as missing.
		for i := 0; i < 2; i++ {
			resp, replayed, err := s.Idempotent(ctx, "empty", "e1", reqHash("e"), func(context.Context, Tx) ([]byte, error) {
				return nil, nil
			})
			require.NoError(t, err)
			assert.Equal(t, i == 1, replayed)
			assert.Empty(t, resp)
			assert.NotNil(t, resp)
		}
	})
}

func TestIdempotentIDReuseRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		insertAuth(t, s, testAuth(t, "m1", "x1", 1000))
		var calls atomic.Int32
		_, _, err := s.Idempotent(ctx, "capture", "req-1", reqHash("capture x1 400"), captureFn("m1", "x1", "c1", 400, &calls))
		require.NoError(t, err)
		_, _, err = s.Idempotent(ctx, "capture", "req-1", reqHash("capture x1 500"), captureFn("m1", "x1", "c2", 500, &calls))
		require.ErrorIs(t, err, ErrIDReuse)
		assert.ErrorIs(t, err, ErrConflict)
		assert.Equal(t, int32(1), calls.Load())
		assert.Equal(t, int64(400), getAuth(t, s, "m1", "x1").CapturedTotal)
	})
}

func TestIdempotentValidatesArguments(t *testing.T) {
	s := openTestSQLite(t)
	noop := func(context.Context, Tx) ([]byte, error) { return nil, nil }
	tests := []struct {
		name, scope, id string
		hash            []byte
	}{
		{"empty scope", "", "r", reqHash("a")},
		{"empty id", "s", "", reqHash("a")},
		{"empty hash", "s", "r", nil},
		{"long hash", "s", "r", make([]byte, 65)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.Idempotent(context.Background(), tc.scope, tc.id, tc.hash, noop)
			assert.ErrorIs(t, err, ErrInvalid)
		})
	}
}

func TestIdempotentRollsBackWhenFnFails(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		insertAuth(t, s, testAuth(t, "m1", "x1", 1000))
		boom := errors.New("signing failed")
		_, _, err := s.Idempotent(ctx, "capture", "req-1", reqHash("r1"), func(ctx context.Context, tx Tx) ([]byte, error) {
			_, err := tx.InsertCapture(ctx, &Capture{MerchantID: "m1", CaptureID: "c1", XID: "x1", Amount: 300,
				Currency: "EUR", CreatedAt: t0})
			require.NoError(t, err)
			_, err = tx.AppendAudit(ctx, AuditRecord{Time: t0, Actor: "gw", Purpose: "sign", XID: "x1"})
			require.NoError(t, err)
			return nil, boom
		})
		require.ErrorIs(t, err, boom)

		a := getAuth(t, s, "m1", "x1")
		assert.Equal(t, int64(0), a.CapturedTotal, "capture rolled back")
		assert.Equal(t, AuthAuthorized, a.Status)
		require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
			_, err := tx.GetCapture(ctx, "m1", "c1")
			assert.ErrorIs(t, err, ErrNotFound)
			return nil
		}))
		n, err := s.VerifyAudit(ctx)
		require.NoError(t, err)
		assert.Zero(t, n, "audit record rolled back")

		// The request ID was not consumed: a retry runs and succeeds.
		resp, replayed, err := s.Idempotent(ctx, "capture", "req-1", reqHash("r1"), captureFn("m1", "x1", "c1", 300, nil))
		require.NoError(t, err)
		assert.False(t, replayed)
		assert.Contains(t, string(resp), "total=300")
	})
}

func TestFailedTxOperationLeavesTransactionUsable(t *testing.T) {
	// A refusal must be storable as the answer: the failed operation is
	// undone to its savepoint and the transaction (on PostgreSQL too) goes on.
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		insertAuth(t, s, testAuth(t, "m1", "x1", 100))
		for i := 0; i < 2; i++ {
			resp, _, err := s.Idempotent(ctx, "capture", "req-over", reqHash("over"), func(ctx context.Context, tx Tx) ([]byte, error) {
				_, err := tx.InsertCapture(ctx, &Capture{MerchantID: "m1", CaptureID: "c1", XID: "x1", Amount: 101,
					Currency: "EUR", CreatedAt: t0})
				if errors.Is(err, ErrLimitExceeded) {
					return []byte("declined: over limit"), nil
				}
				return nil, fmt.Errorf("want ErrLimitExceeded, got %v", err)
			})
			require.NoError(t, err)
			assert.Equal(t, "declined: over limit", string(resp))
		}
		assert.Equal(t, int64(0), getAuth(t, s, "m1", "x1").CapturedTotal)
	})
}

func TestConcurrentIdenticalCapturesHaveOneEffect(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		insertAuth(t, s, testAuth(t, "m1", "x1", 1000))
		const n = 10
		var calls atomic.Int32
		resps := make([][]byte, n)
		replays := make([]bool, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				resps[i], replays[i], errs[i] = s.Idempotent(ctx, "capture", "req-dup", reqHash("capture x1 250"),
					captureFn("m1", "x1", "c-dup", 250, &calls))
			}()
		}
		close(start)
		wg.Wait()
		fresh := 0
		for i := 0; i < n; i++ {
			require.NoError(t, errs[i], "caller %d", i)
			assert.Equal(t, resps[0], resps[i], "caller %d got a different answer", i)
			if !replays[i] {
				fresh++
			}
		}
		assert.Equal(t, 1, fresh, "exactly one caller ran the capture")
		a := getAuth(t, s, "m1", "x1")
		assert.Equal(t, int64(250), a.CapturedTotal)
		require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
			cs, err := tx.ListCaptures(ctx, "m1", "x1")
			require.NoError(t, err)
			assert.Len(t, cs, 1)
			return nil
		}))
	})
}

func TestConcurrentDifferentCapturesRespectLimitInSQL(t *testing.T) {
	// Distinct requests each capturing 60 of 100: the SQL condition lets
	// exactly one through however they interleave.
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		insertAuth(t, s, testAuth(t, "m1", "x1", 100))
		const n = 6
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("c%d", i)
				_, _, errs[i] = s.Idempotent(ctx, "capture", id, reqHash(id), captureFn("m1", "x1", id, 60, nil))
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			} else {
				assert.ErrorIs(t, err, ErrLimitExceeded)
			}
		}
		assert.Equal(t, 1, ok)
		assert.Equal(t, int64(60), getAuth(t, s, "m1", "x1").CapturedTotal)
	})
}

func TestPurgeProcessedRequests(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		_, _, err := s.Idempotent(ctx, "s", "r", reqHash("a"), func(context.Context, Tx) ([]byte, error) { return []byte("a"), nil })
		require.NoError(t, err)
		n, err := s.PurgeProcessedRequests(ctx, longAgo)
		require.NoError(t, err)
		assert.Zero(t, n)
		n, err = s.PurgeProcessedRequests(ctx, farFuture)
		require.NoError(t, err)
		assert.Equal(t, int64(1), n)
		_, replayed, err := s.Idempotent(ctx, "s", "r", reqHash("b"), func(context.Context, Tx) ([]byte, error) { return []byte("b"), nil })
		require.NoError(t, err)
		assert.False(t, replayed)
	})
}

func TestOpenRelativeSQLitePath(t *testing.T) {
	t.Chdir(t.TempDir())
	s, err := Open(context.Background(), "sqlite:./var/setpay.db")
	require.NoError(t, err)
	defer s.Close()
	assert.Equal(t, "sqlite", s.Dialect())
	insertAuth(t, s, testAuth(t, "m1", "x1", 5))
	assert.FileExists(t, filepath.Join("var", "setpay.db"))
}

func TestReplicasShareExactlyOnce(t *testing.T) {
	// Two Store handles on one database stand in for two gateway replicas.
	ctx := context.Background()
	for _, be := range []struct {
		name string
		dsn  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "shared.db") }},
		{"postgres", func(t *testing.T) string { return pgSchemaDSN(t) }},
	} {
		t.Run(be.name, func(t *testing.T) {
			dsn := be.dsn(t)
			replicas := make([]*Store, 2)
			for i := range replicas {
				s, err := Open(ctx, dsn)
				require.NoError(t, err)
				t.Cleanup(func() { _ = s.Close() })
				replicas[i] = s
			}
			insertAuth(t, replicas[0], testAuth(t, "m1", "x1", 1000))
			const n = 10
			resps := make([][]byte, n)
			errs := make([]error, n)
			var calls atomic.Int32
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resps[i], _, errs[i] = replicas[i%2].Idempotent(ctx, "capture", "req-r", reqHash("r"),
						captureFn("m1", "x1", "c-r", 100, &calls))
				}()
			}
			wg.Wait()
			for i := 0; i < n; i++ {
				require.NoError(t, errs[i])
				assert.Equal(t, resps[0], resps[i])
			}
			assert.Equal(t, int64(100), getAuth(t, replicas[1], "m1", "x1").CapturedTotal)
			// fn may be rerun after a transient error, but only one run commits.
			assert.GreaterOrEqual(t, calls.Load(), int32(1))
		})
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "setpay.db")
	s, err := Open(ctx, "sqlite:"+path)
	require.NoError(t, err)
	_, err = s.db.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)`)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	_, err = Open(ctx, "sqlite:"+path)
	assert.ErrorContains(t, err, "newer than this program")
}

func TestSQLiteFileIsOwnerOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "setpay.db")
	s := openAt(t, path)
	insertAuth(t, s, testAuth(t, "m1", "x1", 5))
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), p)
	}
}

func openAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), "sqlite:"+path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestViewRefusesWrites: a View's function cannot change anything, audit
// records included, on either engine (SQLite runs Views in its group commits;
// PostgreSQL runs them on a connection without a transaction).
func TestViewRefusesWrites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		err := s.View(ctx, func(ctx context.Context, tx Tx) error {
			return tx.InsertAuthorization(ctx, testAuth(t, "m1", "x1", 100))
		})
		assert.ErrorIs(t, err, ErrInvalid)
		err = s.View(ctx, func(ctx context.Context, tx Tx) error {
			_, err := tx.AppendAudit(ctx, AuditRecord{Time: t0, Actor: "a", Purpose: "p"})
			return err
		})
		assert.ErrorIs(t, err, ErrInvalid)
		err = s.View(ctx, func(ctx context.Context, tx Tx) error {
			_, err := tx.GetAuthorization(ctx, "m1", "x1")
			return err
		})
		assert.ErrorIs(t, err, ErrNotFound, "nothing was written")
		_, err = s.ChainAudit(ctx)
		require.NoError(t, err)
		rep, err := s.CheckAudit(ctx)
		require.NoError(t, err)
		assert.Equal(t, AuditReport{}, rep)
		// A View between writes in the same SQLite group does not make them read-only.
		insertAuth(t, s, testAuth(t, "m1", "x2", 100))
		assert.Equal(t, int64(100), getAuth(t, s, "m1", "x2").Amount)
	})
}
