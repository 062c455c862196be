package store

import (
	"context"
	"fmt"
)

// ListAudit returns up to limit audit records with seq > after, in order, for
// reports and tests. It does not verify the chain; VerifyAudit does. Only
// linked records have a seq: on PostgreSQL, call ChainAudit first to include
// everything committed so far.
func (s *Store) ListAudit(ctx context.Context, after int64, limit int) ([]AuditRecord, error) {
	if limit <= 0 || limit > 10000 {
		return nil, invalidf("list audit: limit %d outside 1..10000", limit)
	}
	rows, err := s.db.QueryContext(ctx, s.d.rebind(`SELECT seq, at, actor, key_uri, purpose, xid, details, prev_hash, hash
		FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?`), after, limit)
	if err != nil {
		return nil, fmt.Errorf("store: list audit: %w", err)
	}
	defer rows.Close()
	var out []AuditRecord
	for rows.Next() {
		var r AuditRecord
		var at int64
		if err := rows.Scan(&r.Seq, &at, &r.Actor, &r.KeyURI, &r.Purpose, &r.XID, &r.Details, &r.PrevHash, &r.Hash); err != nil {
			return nil, fmt.Errorf("store: list audit: %w", err)
		}
		r.Time = fromMicros(at)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list audit: %w", err)
	}
	return out, nil
}
