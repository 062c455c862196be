package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func appendN(t *testing.T, s *Store, n int) []AuditRecord {
	t.Helper()
	out := make([]AuditRecord, n)
	for i := range out {
		r, err := s.AppendAudit(context.Background(), AuditRecord{
			Time: t0.Add(time.Duration(i) * time.Millisecond), Actor: "gateway-1",
			KeyURI: "pkcs11:token=gw;object=sign", Purpose: "sign AuthRes", XID: fmt.Sprintf("x%d", i),
			Details: `{"amount":100}`,
		})
		require.NoError(t, err)
		out[i] = r
	}
	return out
}

func TestAuditChainVerifies(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		n, err := s.VerifyAudit(context.Background())
		require.NoError(t, err)
		assert.Zero(t, n, "empty chain")
		recs := appendN(t, s, 5)
		for i, r := range recs {
			assert.Equal(t, int64(i+1), r.Seq)
			assert.Len(t, r.Hash, 32)
			if i > 0 {
				assert.Equal(t, recs[i-1].Hash, r.PrevHash)
			}
		}
		assert.Equal(t, make([]byte, 32), recs[0].PrevHash)
		n, err = s.VerifyAudit(context.Background())
		require.NoError(t, err)
		assert.Equal(t, int64(5), n)
	})
}

func TestAuditDetectsTampering(t *testing.T) {
	tests := []struct {
		name    string
		tamper  string // SQL run behind the store's back
		wantSeq int64
	}{
		{"deleted middle record", `DELETE FROM audit_log WHERE seq = 3`, 3},
		{"deleted first record", `DELETE FROM audit_log WHERE seq = 1`, 1},
		{"deleted last record", `DELETE FROM audit_log WHERE seq = 5`, 5},
		{"edited details", `UPDATE audit_log SET details = '{"amount":1}' WHERE seq = 2`, 2},
		{"edited time", `UPDATE audit_log SET at = at + 1 WHERE seq = 4`, 4},
		{"edited key URI", `UPDATE audit_log SET key_uri = 'pkcs11:token=other' WHERE seq = 5`, 5},
		{"edited actor", `UPDATE audit_log SET actor = 'someone' WHERE seq = 1`, 1},
	}
	forEachBackend(t, func(t *testing.T, s *Store) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				ctx := context.Background()
				_, err := s.db.ExecContext(ctx, `DELETE FROM audit_log`)
				require.NoError(t, err)
				_, err = s.db.ExecContext(ctx, `DELETE FROM audit_head`)
				require.NoError(t, err)
				appendN(t, s, 5)
				_, err = s.db.ExecContext(ctx, tc.tamper)
				require.NoError(t, err)
				_, err = s.VerifyAudit(ctx)
				require.ErrorIs(t, err, ErrAuditBroken)
				var ae *AuditError
				require.True(t, errors.As(err, &ae))
				assert.Equal(t, tc.wantSeq, ae.Seq, "reported at %v", ae)
			})
		}
	})
}

func TestAuditDetectsRehashedForgery(t *testing.T) {
	// An edit that also recomputes the record's own hash still breaks the
	// link to its successor.
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		recs := appendN(t, s, 4)
		forged := recs[1]
		forged.Details = `{"amount":999}`
		forged.Hash = auditHash(forged.PrevHash, &forged)
		_, err := s.db.ExecContext(ctx, s.d.rebind(`UPDATE audit_log SET details = ?, hash = ? WHERE seq = ?`),
			forged.Details, forged.Hash, forged.Seq)
		require.NoError(t, err)
		_, err = s.VerifyAudit(ctx)
		var ae *AuditError
		require.ErrorAs(t, err, &ae)
		assert.Equal(t, int64(2), ae.Seq)
	})
}

func TestAuditConcurrentAppendsSerialize(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		const workers, each = 4, 5
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					_, err := s.AppendAudit(ctx, AuditRecord{Time: t0, Actor: fmt.Sprintf("replica-%d", w),
						Purpose: "sign", XID: fmt.Sprintf("x%d-%d", w, i)})
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		n, err := s.VerifyAudit(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(workers*each), n)
	})
}

func TestAuditValidation(t *testing.T) {
	s := openTestSQLite(t)
	_, err := s.AppendAudit(context.Background(), AuditRecord{Actor: "a"})
	assert.ErrorIs(t, err, ErrInvalid, "time required")
	_, err = s.AppendAudit(context.Background(), AuditRecord{Time: t0, Details: string(make([]byte, maxAuditField+1))})
	assert.ErrorIs(t, err, ErrInvalid)
}
