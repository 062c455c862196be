package store

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const claimScope = "gateway/auth"

// answerWith is a CompleteClaim function that inserts an authorization and answers ans.
func answerWith(a *Authorization, ans string) func(ctx context.Context, tx Tx) ([]byte, error) {
	return func(ctx context.Context, tx Tx) ([]byte, error) {
		if err := tx.InsertAuthorization(ctx, a); err != nil {
			return nil, err
		}
		return []byte(ans), nil
	}
}

// TestClaimLifecycle walks one request through every state Claim reports, on both
// engines: a claim commits before anything else happens, a live claim is pending for
// everyone else, a claim whose lease ran out passes to the next caller, and the
// answer stored is returned unchanged to every later caller.
func TestClaimLifecycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		h := reqHash("auth x1")
		const lease = 30 * time.Second

		first, err := s.Claim(ctx, claimScope, "k1", h, t0, lease)
		require.NoError(t, err)
		assert.Equal(t, ClaimNew, first.State)
		require.Len(t, first.Token, 16)
		_, _, err = s.StoredResponse(ctx, claimScope, "k1")
		assert.ErrorIs(t, err, ErrNotFound, "a claim is not an answer")

		tests := []struct {
			name string
			at   time.Time
			hash []byte
			want ClaimState
			err  error
		}{
			{"retry while the lease runs", t0.Add(time.Second), h, ClaimPending, nil},
			{"retry at the lease's end", t0.Add(lease), h, ClaimPending, nil},
			{"other content", t0.Add(time.Second), reqHash("other"), 0, ErrIDReuse},
			{"other content after the lease", t0.Add(time.Hour), reqHash("other"), 0, ErrIDReuse},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c, err := s.Claim(ctx, claimScope, "k1", tt.hash, tt.at, lease)
				if tt.err != nil {
					require.ErrorIs(t, err, tt.err)
					assert.ErrorIs(t, err, ErrConflict)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, tt.want, c.State)
				assert.Empty(t, c.Token, "no token for a claim not held")
				assert.Equal(t, t0.Add(lease), c.Until)
			})
		}

		// The holder crashed: after the lease the next caller takes over, once.
		taken, err := s.Claim(ctx, claimScope, "k1", h, t0.Add(lease+time.Second), lease)
		require.NoError(t, err)
		assert.Equal(t, ClaimTakenOver, taken.State)
		assert.NotEqual(t, first.Token, taken.Token)
		again, err := s.Claim(ctx, claimScope, "k1", h, t0.Add(lease+2*time.Second), lease)
		require.NoError(t, err)
		assert.Equal(t, ClaimPending, again.State, "the new holder's lease runs from the takeover")

		// The old holder cannot release the new holder's claim.
		require.NoError(t, s.ReleaseClaim(ctx, claimScope, "k1", first.Token))
		again, err = s.Claim(ctx, claimScope, "k1", h, t0.Add(lease+2*time.Second), lease)
		require.NoError(t, err)
		assert.Equal(t, ClaimPending, again.State)

		resp, replayed, err := s.CompleteClaim(ctx, claimScope, "k1", h, answerWith(testAuth(t, "m1", "x1", 100), "answer 1"))
		require.NoError(t, err)
		assert.False(t, replayed)
		assert.Equal(t, []byte("answer 1"), resp)

		// Late completion by the crashed-but-not-dead first holder: the stored answer.
		resp, replayed, err = s.CompleteClaim(ctx, claimScope, "k1", h, func(context.Context, Tx) ([]byte, error) {
			t.Error("fn ran for an answered claim")
			return nil, nil
		})
		require.NoError(t, err)
		assert.True(t, replayed)
		assert.Equal(t, []byte("answer 1"), resp)

		done, err := s.Claim(ctx, claimScope, "k1", h, t0.Add(time.Hour), lease)
		require.NoError(t, err)
		assert.Equal(t, ClaimAnswered, done.State)
		assert.Equal(t, []byte("answer 1"), done.Response)
		_, err = s.Claim(ctx, claimScope, "k1", reqHash("other"), t0.Add(time.Hour), lease)
		assert.ErrorIs(t, err, ErrIDReuse, "a replay with other content is still refused")
		gotHash, stored, err := s.StoredResponse(ctx, claimScope, "k1")
		require.NoError(t, err)
		assert.Equal(t, h, gotHash)
		assert.Equal(t, []byte("answer 1"), stored)
		// The same answer through Idempotent, for code that has not moved to claims.
		resp, replayed, err = s.Idempotent(ctx, claimScope, "k1", h, func(context.Context, Tx) ([]byte, error) {
			t.Error("fn ran for an answered request")
			return nil, nil
		})
		require.NoError(t, err)
		assert.True(t, replayed)
		assert.Equal(t, []byte("answer 1"), resp)
	})
}

// TestClaimReleaseAndFailedCompletion: a failed completion stores nothing, and a
// released claim is free at once for the retry.
func TestClaimReleaseAndFailedCompletion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		h := reqHash("auth x2")
		c, err := s.Claim(ctx, claimScope, "k2", h, t0, time.Minute)
		require.NoError(t, err)
		require.True(t, c.Holds())
		_, _, err = s.CompleteClaim(ctx, claimScope, "k2", h, func(ctx context.Context, tx Tx) ([]byte, error) {
			if err := tx.InsertAuthorization(ctx, testAuth(t, "m1", "x2", 100)); err != nil {
				return nil, err
			}
			return nil, assert.AnError
		})
		require.ErrorIs(t, err, assert.AnError)
		var n int
		require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM authorizations WHERE xid = 'x2'`).Scan(&n))
		assert.Zero(t, n, "nothing half-written")
		pending, err := s.Claim(ctx, claimScope, "k2", h, t0, time.Minute)
		require.NoError(t, err)
		assert.Equal(t, ClaimPending, pending.State, "the failed holder still holds the claim until it releases it")

		require.NoError(t, s.ReleaseClaim(ctx, claimScope, "k2", c.Token))
		retry, err := s.Claim(ctx, claimScope, "k2", h, t0, time.Minute)
		require.NoError(t, err)
		assert.Equal(t, ClaimNew, retry.State, "released: the retry claims it at once")

		require.NoError(t, s.ReleaseClaim(ctx, claimScope, "k2", retry.Token))
		_, _, err = s.CompleteClaim(ctx, claimScope, "k2", h, answerWith(testAuth(t, "m1", "x2", 100), "late"))
		assert.ErrorIs(t, err, ErrClaimLost)
	})
}

// TestClaimConcurrentTakers: many callers claim one request at once (new, then after
// the lease ran out): exactly one holds it each time.
func TestClaimConcurrentTakers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		h := reqHash("auth x3")
		const n = 8
		race := func(at time.Time) map[ClaimState]int {
			var mu sync.Mutex
			got := map[ClaimState]int{}
			var wg sync.WaitGroup
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := s.Claim(ctx, claimScope, "k3", h, at, time.Minute)
					if !assert.NoError(t, err) {
						return
					}
					mu.Lock()
					got[c.State]++
					mu.Unlock()
				}()
			}
			wg.Wait()
			return got
		}
		assert.Equal(t, map[ClaimState]int{ClaimNew: 1, ClaimPending: n - 1}, race(t0))
		assert.Equal(t, map[ClaimState]int{ClaimTakenOver: 1, ClaimPending: n - 1}, race(t0.Add(2*time.Minute)))
	})
}

func TestClaimValidatesArguments(t *testing.T) {
	s := openTestSQLite(t)
	ctx := context.Background()
	tests := []struct {
		name, scope, id string
		hash            []byte
		lease           time.Duration
	}{
		{"empty scope", "", "k", reqHash("a"), time.Minute},
		{"empty request ID", claimScope, "", reqHash("a"), time.Minute},
		{"empty hash", claimScope, "k", nil, time.Minute},
		{"hash too long", claimScope, "k", make([]byte, 65), time.Minute},
		{"no lease", claimScope, "k", reqHash("a"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Claim(ctx, tt.scope, tt.id, tt.hash, t0, tt.lease)
			assert.ErrorIs(t, err, ErrInvalid)
		})
	}
}
