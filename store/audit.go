package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
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

// chainBatch bounds how many pending records one chaining transaction links.
const chainBatch = 500

// AppendAudit records r inside the caller's transaction, so the record
// commits exactly when the state change it describes does.
//
// On SQLite the record is linked into the chain at once (writers are
// serialized anyway) and the returned record carries its Seq, PrevHash and
// Hash. On PostgreSQL it is stored unchained and takes no lock: the store's
// chainer links committed records in commit order shortly after (see
// ChainAudit and docs/protocol.md), and the returned record has Seq 0 and no
// hashes.
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
	r.Seq, r.PrevHash, r.Hash = 0, nil, nil
	if !t.d.chainInline() {
		if t.readOnly {
			return AuditRecord{}, errReadOnly
		}
		// Kept until just before commit, then inserted in one statement
		// (flushAudit): the record commits exactly with the transaction and
		// costs one round trip per transaction, not three per record.
		t.pendingAudit = append(t.pendingAudit, r)
		t.audited = true
		return r, nil
	}
	recs := []AuditRecord{r}
	err := t.atomic(ctx, func() error {
		seq, prev, err := t.lockAuditHead(ctx)
		if err != nil {
			return err
		}
		return t.linkAudit(ctx, seq, prev, recs)
	})
	if err != nil {
		return AuditRecord{}, err
	}
	return recs[0], nil
}

// flushAudit inserts the records AppendAudit kept into audit_pending, in
// append order (their ids keep that order for the chainer). tryTx calls it
// right before the commit; if it fails, the transaction does not commit.
func (t *txn) flushAudit(ctx context.Context) error {
	recs := t.pendingAudit
	t.pendingAudit = nil
	const perInsert = 100
	for start := 0; start < len(recs); start += perInsert {
		chunk := recs[start:min(start+perInsert, len(recs))]
		var q strings.Builder
		q.WriteString(`INSERT INTO audit_pending (at, actor, key_uri, purpose, xid, details) VALUES `)
		args := make([]any, 0, 6*len(chunk))
		for i, r := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?, ?, ?)")
			args = append(args, micros(r.Time), r.Actor, r.KeyURI, r.Purpose, r.XID, r.Details)
		}
		if _, err := t.exec(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("store: audit: record %d key operations: %w", len(recs), err)
		}
	}
	return nil
}

// lockAuditHead locks the chain head for the rest of the transaction (row
// lock on PostgreSQL; SQLite's write transaction already holds the database),
// creating it on first use, and returns its seq and hash. A concurrent chainer
// waits here and then reads the head the first one committed.
func (t *txn) lockAuditHead(ctx context.Context) (int64, []byte, error) {
	var seq int64
	var hash []byte
	q := `SELECT seq, hash FROM audit_head WHERE id = 1` + t.d.forUpdate()
	err := t.queryRow(ctx, q).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := t.exec(ctx, `INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, ?)
			ON CONFLICT (id) DO NOTHING`, zeroHash); err != nil {
			return 0, nil, fmt.Errorf("store: audit: init head: %w", err)
		}
		err = t.queryRow(ctx, q).Scan(&seq, &hash)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("store: audit: lock head: %w", err)
	}
	return seq, hash, nil
}

// linkAudit gives recs, in order, the sequence numbers after seq, links each
// to its predecessor (prev is the head's hash), inserts them into audit_log
// and moves the head. The caller holds the head lock.
func (t *txn) linkAudit(ctx context.Context, seq int64, prev []byte, recs []AuditRecord) error {
	for i := range recs {
		r := &recs[i]
		seq++
		r.Seq, r.PrevHash = seq, prev
		r.Hash = auditHash(prev, r)
		prev = r.Hash
	}
	const perInsert = 100 // 900 parameters, under every engine's limit
	for start := 0; start < len(recs); start += perInsert {
		chunk := recs[start:min(start+perInsert, len(recs))]
		var q strings.Builder
		q.WriteString(`INSERT INTO audit_log (seq, at, actor, key_uri, purpose, xid, details, prev_hash, hash) VALUES `)
		args := make([]any, 0, 9*len(chunk))
		for i, r := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?)")
			args = append(args, r.Seq, micros(r.Time), r.Actor, r.KeyURI, r.Purpose, r.XID, r.Details, r.PrevHash, r.Hash)
		}
		if _, err := t.exec(ctx, q.String(), args...); err != nil {
			return t.writeErr(err, "audit: link records %d..%d", chunk[0].Seq, chunk[len(chunk)-1].Seq)
		}
	}
	if _, err := t.exec(ctx, `UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`, seq, prev); err != nil {
		return fmt.Errorf("store: audit: update head: %w", err)
	}
	return nil
}

// chainPending links up to limit committed pending records, oldest insertion
// first, and reports how many it linked. It locks the head before it looks at
// audit_pending, so concurrent chainers (one per replica) take turns and each
// sees what the previous one removed.
//
// Order: a record becomes visible here only once its transaction has
// committed, and gets the next free seq then. Sequence numbers are therefore
// assigned in the order records are found committed, never reserved for a
// transaction still running, so the chain has no gap to wait for: a
// transaction that committed late is simply linked later.
func (t *txn) chainPending(ctx context.Context, limit int) (int, error) {
	// Nothing to do is the common case for the second of two chainers kicked
	// by the same commits; find that out without writing (and flushing) anything.
	var found bool
	if err := t.queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM audit_pending)`).Scan(&found); err != nil {
		return 0, fmt.Errorf("store: audit: look for pending records: %w", err)
	}
	if !found {
		return 0, nil
	}
	seq, prev, err := t.lockAuditHead(ctx)
	if err != nil {
		return 0, err
	}
	// DELETE ... RETURNING takes exactly the rows it returns, so a record that
	// commits while this runs stays pending for the next pass.
	rows, err := t.query(ctx, `DELETE FROM audit_pending WHERE id IN
		(SELECT id FROM audit_pending ORDER BY id LIMIT ?)
		RETURNING id, at, actor, key_uri, purpose, xid, details`, limit)
	if err != nil {
		return 0, fmt.Errorf("store: audit: take pending records: %w", err)
	}
	type pending struct {
		id int64
		r  AuditRecord
	}
	var ps []pending
	for rows.Next() {
		var p pending
		var at int64
		if err := rows.Scan(&p.id, &at, &p.r.Actor, &p.r.KeyURI, &p.r.Purpose, &p.r.XID, &p.r.Details); err != nil {
			rows.Close()
			return 0, fmt.Errorf("store: audit: take pending records: %w", err)
		}
		p.r.Time = fromMicros(at)
		ps = append(ps, p)
	}
	if err := rows.Close(); err != nil {
		return 0, fmt.Errorf("store: audit: take pending records: %w", err)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("store: audit: take pending records: %w", err)
	}
	if len(ps) == 0 {
		return 0, nil
	}
	// RETURNING has no defined order; one transaction's records keep theirs.
	slices.SortFunc(ps, func(a, b pending) int { return int(a.id - b.id) })
	recs := make([]AuditRecord, len(ps))
	for i := range ps {
		recs[i] = ps[i].r
	}
	if err := t.linkAudit(ctx, seq, prev, recs); err != nil {
		return 0, err
	}
	return len(recs), nil
}

// ChainAudit links every audit record committed so far that is not yet in the
// chain and reports how many it linked. The store's background chainer calls
// it after each commit that appended records (and every chainEvery, for other
// replicas' records and those a killed process left); call it directly to
// make sure the chain covers everything committed before the call. Several
// processes may call it at once: they take turns on the chain head.
func (s *Store) ChainAudit(ctx context.Context) (int64, error) {
	var total int64
	for {
		var n int
		err := s.runTx(ctx, false, func(ctx context.Context, t *txn) error {
			var err error
			n, err = t.chainPending(ctx, chainBatch)
			return err
		})
		if err != nil {
			return total, err
		}
		total += int64(n)
		if n < chainBatch {
			return total, nil
		}
	}
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

// AuditReport is what CheckAudit found.
type AuditReport struct {
	// Verified records form the chain 1..Verified and are all intact.
	Verified int64
	// Unchained records have committed but the chainer has not linked them
	// yet. They are recorded, but the chain does not protect them until it
	// does: a deletion or edit before then would not be detected. A few of
	// them on a busy PostgreSQL store are normal; old ones mean no chainer
	// has run (every process that appends runs one; ChainAudit links them).
	Unchained int64
	// OldestUnchained is the time of the oldest unchained record (zero when
	// there is none).
	OldestUnchained time.Time
}

// VerifyAudit walks the chain from seq 1 and returns how many records
// verified; see CheckAudit.
func (s *Store) VerifyAudit(ctx context.Context) (int64, error) {
	rep, err := s.CheckAudit(ctx)
	return rep.Verified, err
}

// CheckAudit walks the chain from seq 1 and counts the records not yet
// linked, in one snapshot; it writes nothing. The first problem in the chain
// is returned as *AuditError (matching ErrAuditBroken): a sequence gap or a
// chain that ends before the head (deleted records), a hash that does not
// match the record's contents or a prev_hash that does not match its
// predecessor (edited records). The report is filled in either way.
//
// The chain proves integrity against edits made without recomputing every
// later hash; someone able to rewrite the whole table and head can forge it,
// so anchor the head hash elsewhere (e.g. sign it periodically) for more.
func (s *Store) CheckAudit(ctx context.Context) (AuditReport, error) {
	var rep AuditReport
	err := s.snapshot(ctx, func(ctx context.Context, t *txn) error {
		rep = AuditReport{}
		var oldest sql.NullInt64
		if err := t.queryRow(ctx, `SELECT COUNT(*), MIN(at) FROM audit_pending`).Scan(&rep.Unchained, &oldest); err != nil {
			return fmt.Errorf("store: verify audit: count unchained: %w", err)
		}
		rep.OldestUnchained = fromNullMicros(oldest)
		var headSeq int64
		var headHash []byte
		err := t.queryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&headSeq, &headHash)
		if errors.Is(err, sql.ErrNoRows) {
			headSeq, headHash = 0, zeroHash
		} else if err != nil {
			return fmt.Errorf("store: verify audit: read head: %w", err)
		}
		// One snapshot: records above the head cannot be seen, but a
		// bound costs nothing and keeps SQLite and PostgreSQL alike.
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
			rep.Verified++
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: verify audit: %w", err)
		}
		if rep.Verified != headSeq {
			return &AuditError{Seq: want, Reason: "record missing (chain ends before head)"}
		}
		if !bytes.Equal(prev, headHash) {
			return &AuditError{Seq: headSeq, Reason: "record edited (head hash does not match)"}
		}
		return nil
	})
	return rep, err
}
