package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGroupCommitIsolatesFailures runs many transactions at once on SQLite, where
// they share commits: every other one fails after writing. The failed ones must
// leave nothing, the others must all be there, also after reopening the file.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "g.db")
	s, err := Open(ctx, "sqlite:"+path)
	require.NoError(t, err)
	errWanted := errors.New("refused after writing")
	const n = 60
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.Update(ctx, func(ctx context.Context, tx Tx) error {
				now := time.Now()
				if err := tx.InsertOrder(ctx, &Order{XID: fmt.Sprintf("x%03d", i), MerchantOrderID: fmt.Sprintf("o%03d", i),
					DescriptionHash: make([]byte, 32), Amount: 100, Currency: "EUR", State: OrderCreated, CreatedAt: now}); err != nil {
					return err
				}
				if i%2 == 1 {
					return errWanted
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range results {
		if i%2 == 1 {
			assert.ErrorIs(t, err, errWanted, "tx %d", i)
		} else {
			assert.NoError(t, err, "tx %d", i)
		}
	}
	require.NoError(t, s.Close())

	s, err = Open(ctx, "sqlite:"+path)
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.View(ctx, func(ctx context.Context, tx Tx) error {
		for i := range n {
			_, err := tx.GetOrder(ctx, fmt.Sprintf("x%03d", i))
			if i%2 == 1 {
				assert.ErrorIs(t, err, ErrNotFound, "failed tx %d left a row", i)
			} else {
				assert.NoError(t, err, "committed tx %d lost", i)
			}
		}
		return nil
	}))
}

// TestGroupCommitHonoursCancelledContexts: a caller whose context ends before its
// turn gets the context's error and its function never runs.
func TestGroupCommitHonoursCancelledContexts(t *testing.T) {
	s := openTestSQLite(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	err := s.Update(ctx, func(ctx context.Context, tx Tx) error { ran = true; return nil })
	assert.ErrorIs(t, err, context.Canceled)
	assert.False(t, ran)
}

// TestGroupCommitGroups: transactions that queue while a commit runs share the
// next one. The first transaction holds the writer until all the others are
// queued behind it; then they must all commit together: two commits in all,
// not one per transaction.
func TestGroupCommitGroups(t *testing.T) {
	s := openTestSQLite(t)
	ctx := context.Background()
	const n = 40 // < maxGroup: the queued ones fit one group
	require.Less(t, n-1, maxGroup)
	before := s.group.commits.Load()
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.Update(ctx, func(ctx context.Context, tx Tx) error {
			<-release
			return insertTestOrder(ctx, tx, 0)
		})
	}()
	var wg sync.WaitGroup
	errs := make([]error, n)
	queued := func() int {
		s.group.mu.Lock()
		defer s.group.mu.Unlock()
		return len(s.group.pending)
	}
	// The first one leads once it is running; wait for that before queuing the rest.
	for queued() != 0 || !s.group.leadingNow() {
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Update(ctx, func(ctx context.Context, tx Tx) error { return insertTestOrder(ctx, tx, i) })
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for queued() < n-1 {
		require.True(t, time.Now().Before(deadline), "only %d of %d transactions queued", queued(), n-1)
		time.Sleep(time.Millisecond)
	}
	close(release)
	require.NoError(t, <-first)
	wg.Wait()
	for i := 1; i < n; i++ {
		require.NoError(t, errs[i], "tx %d", i)
	}
	assert.Equal(t, int64(2), s.group.commits.Load()-before, "commits for %d transactions", n)
	var count int
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM orders`).Scan(&count))
	assert.Equal(t, n, count, "every transaction committed")
}

func insertTestOrder(ctx context.Context, tx Tx, i int) error {
	return tx.InsertOrder(ctx, &Order{XID: fmt.Sprintf("x%03d", i), MerchantOrderID: fmt.Sprintf("o%03d", i),
		DescriptionHash: make([]byte, 32), Amount: 100, Currency: "EUR", State: OrderCreated, CreatedAt: t0})
}
