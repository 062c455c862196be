package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
)

var zeroHash = make([]byte, sha256.Size)

const auditDomain = "setpay-audit-v1"

// auditEncode is the canonical encoding that is hashed: a domain tag, the
// sequence number and time as fixed 8-byte big-endian integers, then each
// text field as a 4-byte big-endian length and its bytes. Length prefixes
// make the encoding injective, so no two records hash the same bytes.
func auditEncode(r *AuditRecord) []byte {
	var b bytes.Buffer
	b.WriteString(auditDomain)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(r.Seq))
	b.Write(n[:])
	binary.BigEndian.PutUint64(n[:], uint64(r.Time.UnixMicro()))
	b.Write(n[:])
	for _, f := range []string{r.Actor, r.KeyURI, r.Purpose, r.XID, r.Details} {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(f)))
		b.Write(l[:])
		b.WriteString(f)
	}
	return b.Bytes()
}

// auditHash is SHA-256(prev_hash || canonical encoding).
func auditHash(prev []byte, r *AuditRecord) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(auditEncode(r))
	return h.Sum(nil)
}

const maxAuditField = 4096

// AppendAudit appends r to the chain inside the caller's transaction.
func (t *txn) AppendAudit(ctx context.Context, r AuditRecord) (AuditRecord, error) {
	if r.Time.IsZero() {
		return AuditRecord{}, invalidf("audit: time must be set")
	}
	for _, f := range []string{r.Actor, r.KeyURI, r.Purpose, r.XID, r.Details} {
		if len(f) > maxAuditField {
			return AuditRecord{}, invalidf("audit: field longer than %d bytes", maxAuditField)
		}
	}
	r.Time = fromMicros(r.Time.UnixMicro())
	err := t.atomic(ctx, func() error {
		if _, err := t.exec(ctx, `INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, ?)
			ON CONFLICT (id) DO NOTHING`, zeroHash); err != nil {
			return fmt.Errorf("store: audit append: init head: %w", err)
		}
		// Updating the head first takes its row lock (PostgreSQL) and the
		// write lock (SQLite): concurrent appenders queue here and each sees
		// the previous one's committed hash.
		if _, err := t.exec(ctx, `UPDATE audit_head SET seq = seq + 1 WHERE id = 1`); err != nil {
			return fmt.Errorf("store: audit append: lock head: %w", err)
		}
		var prev []byte
		if err := t.queryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&r.Seq, &prev); err != nil {
			return fmt.Errorf("store: audit append: read head: %w", err)
		}
		r.PrevHash = prev
		r.Hash = auditHash(prev, &r)
		if _, err := t.exec(ctx, `INSERT INTO audit_log (seq, at, actor, key_uri, purpose, xid, details, prev_hash, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, r.Seq, micros(r.Time), r.Actor, r.KeyURI, r.Purpose, r.XID,
			r.Details, r.PrevHash, r.Hash); err != nil {
			return t.writeErr(err, "audit append %d", r.Seq)
		}
		if _, err := t.exec(ctx, `UPDATE audit_head SET hash = ? WHERE id = 1`, r.Hash); err != nil {
			return fmt.Errorf("store: audit append: update head: %w", err)
		}
		return nil
	})
	if err != nil {
		return AuditRecord{}, err
	}
	return r, nil
}

// AppendAudit appends r to the audit chain in its own transaction. To make
// the record commit with a state change, use Tx.AppendAudit instead.
func (s *Store) AppendAudit(ctx context.Context, r AuditRecord) (AuditRecord, error) {
	var out AuditRecord
	err := s.Update(ctx, func(ctx context.Context, tx Tx) error {
		var err error
		out, err = tx.AppendAudit(ctx, r)
		return err
	})
	return out, err
}

// VerifyAudit walks the chain from seq 1 and returns how many records
// verified. The first problem is returned as *AuditError (matching
// ErrAuditBroken): a sequence gap or a chain that ends before the head
// (deleted records), a hash that does not match the record's contents or a
// prev_hash that does not match its predecessor (edited records).
//
// The chain proves integrity against edits made without recomputing every
// later hash; someone able to rewrite the whole table and head can forge it,
// so anchor the head hash elsewhere (e.g. sign it periodically) for more.
func (s *Store) VerifyAudit(ctx context.Context) (int64, error) {
	var count int64
	err := s.View(ctx, func(ctx context.Context, tx Tx) error {
		t := tx.(*txn)
		var headSeq int64
		var headHash []byte
		err := t.queryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&headSeq, &headHash)
		if errors.Is(err, sql.ErrNoRows) {
			headSeq, headHash = 0, zeroHash
		} else if err != nil {
			return fmt.Errorf("store: verify audit: read head: %w", err)
		}
		// Records above the head seq belong to appends that committed after
		// the head was read; ignore them so a busy log verifies cleanly.
		rows, err := t.query(ctx, `SELECT seq, at, actor, key_uri, purpose, xid, details, prev_hash, hash
			FROM audit_log WHERE seq <= ? ORDER BY seq`, headSeq)
		if err != nil {
			return fmt.Errorf("store: verify audit: %w", err)
		}
		defer rows.Close()
		want := int64(1)
		prev := zeroHash
		for rows.Next() {
			var r AuditRecord
			var at int64
			if err := rows.Scan(&r.Seq, &at, &r.Actor, &r.KeyURI, &r.Purpose, &r.XID, &r.Details,
				&r.PrevHash, &r.Hash); err != nil {
				return fmt.Errorf("store: verify audit: %w", err)
			}
			r.Time = fromMicros(at)
			switch {
			case r.Seq != want:
				return &AuditError{Seq: want, Reason: "record missing (sequence gap)"}
			case !bytes.Equal(r.Hash, auditHash(r.PrevHash, &r)):
				return &AuditError{Seq: r.Seq, Reason: "hash mismatch (record edited)"}
			case !bytes.Equal(r.PrevHash, prev):
				// This record is intact but its predecessor was replaced
				// with a self-consistent forgery.
				return &AuditError{Seq: r.Seq - 1, Reason: "record edited (successor's prev_hash does not match)"}
			}
			prev = r.Hash
			want++
			count++
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: verify audit: %w", err)
		}
		if count != headSeq {
			return &AuditError{Seq: want, Reason: "record missing (chain ends before head)"}
		}
		if !bytes.Equal(prev, headHash) {
			return &AuditError{Seq: headSeq, Reason: "record edited (head hash does not match)"}
		}
		return nil
	})
	if err != nil {
		return count, err
	}
	return count, nil
}
