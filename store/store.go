// Package store is setpay's durable store: gateway authorizations, captures,
// credits and batches; merchant orders; CA certificates, revocations,
// enrollment secrets and CRL numbers; processed requests for exactly-once
// handling; and a hash-chained audit log of private-key operations.
//
// One schema (embedded, versioned migrations) serves two engines: SQLite
// (modernc.org/sqlite, pure Go, for a single process) and PostgreSQL (pgx/v5,
// shared by several gateway replicas). All SQL is written once; a small
// dialect layer rewrites placeholders and type names and classifies errors.
//
// Audit records commit with the transaction that made the key operation. On
// PostgreSQL they are linked into the hash chain shortly after commit by a
// chainer each Store runs once it has appended (see ChainAudit and
// docs/protocol.md), so replicas do not queue on the chain head.
//
// Money is always integer minor units with an ISO 4217 code. PANs are never
// stored: only a keyed hash (PANHash) and a masked form (MaskPAN).
//
// Services use Store.Idempotent for every state-changing request so that a
// retried or duplicated request has exactly one effect and gets the same
// answer bytes. Functions passed to Idempotent, Update and View must use only
// the Tx they are given (never the Store, which would deadlock SQLite's single
// writer) and must have no effects outside it, since a transient engine error
// runs them again.
//
// Tests run on SQLite always and on PostgreSQL when SETPAY_TEST_PG_DSN is set:
//
//	scripts/pg-test.sh run go test -race ./store/...
package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver
)

// DB is the boundary services depend on. *Store implements it for both
// SQLite and PostgreSQL.
type DB interface {
	// Idempotent runs fn exactly once per (scope, requestID); see Store.Idempotent.
	Idempotent(ctx context.Context, scope, requestID string, requestHash []byte,
		fn func(ctx context.Context, tx Tx) ([]byte, error)) (response []byte, replayed bool, err error)
	// Claim, CompleteClaim and ReleaseClaim are the two-step form of Idempotent,
	// for requests whose effect reaches outside the store; see Store.Claim.
	Claim(ctx context.Context, scope, requestID string, requestHash []byte, now time.Time, lease time.Duration) (Claim, error)
	CompleteClaim(ctx context.Context, scope, requestID string, requestHash []byte,
		fn func(ctx context.Context, tx Tx) ([]byte, error)) (response []byte, replayed bool, err error)
	ReleaseClaim(ctx context.Context, scope, requestID string, token []byte) error
	// Update runs fn in one read-write transaction.
	Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	// View runs fn read-only; see Store.View.
	View(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	// AppendAudit appends one record to the audit chain in its own transaction.
	AppendAudit(ctx context.Context, r AuditRecord) (AuditRecord, error)
	// VerifyAudit walks the audit chain; see Store.VerifyAudit.
	VerifyAudit(ctx context.Context) (int64, error)
	// PurgeProcessedRequests forgets stored answers created before t.
	PurgeProcessedRequests(ctx context.Context, before time.Time) (int64, error)
	Close() error
}

var _ DB = (*Store)(nil)

// Store is a handle on one database. It is safe for concurrent use and holds
// no state outside the database besides the connection pool and, on
// PostgreSQL, the audit chainer (see ChainAudit), which Close stops.
type Store struct {
	db *sql.DB
	d  dialect
	// group commits concurrent transactions together on SQLite (see groupTx); nil
	// on PostgreSQL, whose row locks let transactions run side by side and whose WAL
	// flush already covers concurrent commits.
	group *committer
	// chain links committed audit records on PostgreSQL; nil on SQLite, which
	// links them inside the appending transaction.
	chain *chainer
}

const (
	maxTxAttempts = 8
	maxIDLen      = 256
)

// Open connects to the database named by dsn and applies pending migrations
// in one transaction. Accepted forms:
//
//	sqlite:./var/setpay.db        (parent directory created 0700 if missing)
//	postgres://user@host:5432/db?sslmode=disable   (or postgresql://)
//
// With MustExist, Open creates nothing: the store must have been opened (and so
// migrated) before, else the error wraps ErrNoStore.
func Open(ctx context.Context, dsn string, opts ...OpenOption) (*Store, error) {
	var o openOptions
	for _, opt := range opts {
		opt(&o)
	}
	var (
		s   *Store
		err error
	)
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		s, err = openSQLite(strings.TrimPrefix(dsn, "sqlite:"), o.mustExist)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s, err = openPostgres(dsn)
	default:
		return nil, invalidf("open: unsupported DSN scheme (want sqlite: or postgres://)")
	}
	if err != nil {
		return nil, err
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("store: open %s: ping: %w", s.d.name(), err)
	}
	if o.mustExist {
		if v, err := s.SchemaVersion(ctx); err != nil || v == 0 {
			s.db.Close()
			return nil, fmt.Errorf("store: open %s: no setpay schema in it: %w", s.d.name(), ErrNoStore)
		}
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// ErrNoStore: Open with MustExist found no store to open.
var ErrNoStore = errors.New("store: no such store (create it first)")

// OpenOption changes what Open does.
type OpenOption func(*openOptions)

type openOptions struct{ mustExist bool }

// MustExist makes Open open an existing store only: a missing SQLite file, or a
// database without setpay's schema, is an error (ErrNoStore) instead of a new, empty
// store, so a misspelt path cannot silently start a second store.
func MustExist() OpenOption { return func(o *openOptions) { o.mustExist = true } }

func openSQLite(path string, mustExist bool) (*Store, error) {
	path = strings.TrimPrefix(path, "//")
	if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, ":memory:") {
		// An in-memory database is per connection, which would silently
		// split state across the pool; require a file.
		return nil, invalidf("open sqlite: need a file path without '?' or '#'")
	}
	flags := os.O_RDWR | os.O_CREATE
	if mustExist {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("store: open sqlite %s: %w: %w", path, ErrNoStore, err)
		}
		flags = os.O_RDWR
	} else if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: open sqlite: create directory: %w", err)
		}
	}
	// Create the file owner-only before SQLite does (it would use 0644);
	// SQLite gives the -wal and -shm files the same mode.
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	// _txlock=immediate: write transactions take the write lock at BEGIN, so
	// two writers never both read and then fail to upgrade (SQLITE_BUSY
	// without waiting); they queue on busy_timeout instead. synchronous=FULL
	// because a lost commit here is a forgotten authorization.
	q := "?_txlock=immediate&_busy_timeout=10000&_foreign_keys=1&_journal_mode=WAL&_synchronous=FULL"
	db, err := sql.Open("sqlite", path+q)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	// One writer at a time anyway; a few connections let readers proceed.
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	return &Store{db: db, d: sqliteDialect{}, group: &committer{}}, nil
}

func openPostgres(dsn string) (*Store, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return &Store{db: db, d: pgDialect{}, chain: newChainer(slog.Default())}, nil
}

// Close stops the audit chainer, links the audit records this process
// committed and closes the connection pool.
func (s *Store) Close() error {
	var err error
	if s.chain != nil {
		err = s.stopChainer()
	}
	return errors.Join(err, s.db.Close())
}

// Dialect names the engine: "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.d.name() }

// Update runs fn in one read-write transaction and commits if fn returns nil.
// Transient engine errors (deadlock, serialization failure, SQLITE_BUSY) roll
// back and run fn again, so fn must have no effects outside tx.
func (s *Store) Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error {
	return s.runTx(ctx, false, func(ctx context.Context, t *txn) error { return fn(ctx, t) })
}

// View runs fn read-only: every write through tx is refused (ErrInvalid).
// On SQLite fn runs in one transaction; on PostgreSQL its statements run on
// one connection without BEGIN/COMMIT, which under READ COMMITTED is what a
// read-only transaction gave (each statement sees what has committed when it
// starts). For one snapshot across statements, use a dedicated method (as
// CheckAudit does).
func (s *Store) View(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error {
	return s.runTx(ctx, true, func(ctx context.Context, t *txn) error { return fn(ctx, t) })
}

func (s *Store) runTx(ctx context.Context, readOnly bool, fn func(ctx context.Context, t *txn) error) error {
	backoff := 2 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := s.tryTx(ctx, readOnly, fn)
		if err == nil || attempt >= maxTxAttempts || !s.d.isRetryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: retry after %v: %w", err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

func (s *Store) tryTx(ctx context.Context, readOnly bool, fn func(ctx context.Context, t *txn) error) (err error) {
	if s.group != nil {
		return s.groupTx(ctx, readOnly, fn)
	}
	if readOnly {
		return s.view(ctx, fn)
	}
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	t := &txn{tx: sqlTx, d: s.d}
	defer func() {
		if err != nil {
			_ = sqlTx.Rollback() // the original error matters, not the rollback's
		}
	}()
	if err := fn(ctx, t); err != nil {
		return err
	}
	if err := t.flushAudit(ctx); err != nil {
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	if t.audited && s.chain != nil {
		s.chainSoon()
	}
	return nil
}

// view runs a PostgreSQL View. Under READ COMMITTED, PostgreSQL's default and
// the isolation every transaction here uses, each statement of a transaction
// takes its own snapshot, so a read-only transaction gives its statements
// nothing that running them one after the other on one connection does not;
// it only costs BEGIN and COMMIT, two round trips per View. So fn runs on a
// pinned connection, and the txn refuses every write (see txn.readOnly).
func (s *Store) view(ctx context.Context, fn func(ctx context.Context, t *txn) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("store: connect: %w", err)
	}
	defer conn.Close()
	t := &txn{tx: conn, d: s.d, readOnly: true}
	if err := fn(ctx, t); err != nil {
		return err
	}
	if len(t.pendingAudit) > 0 {
		return errReadOnly
	}
	return nil
}

// errReadOnly: a View's function tried to change something.
var errReadOnly = fmt.Errorf("store: write in a read-only View: %w", ErrInvalid)

// snapshot runs fn in a read-only transaction that sees one snapshot of the
// whole database (PostgreSQL's default, READ COMMITTED, takes one per
// statement; an SQLite read transaction is one snapshot already).
func (s *Store) snapshot(ctx context.Context, fn func(ctx context.Context, t *txn) error) error {
	if s.group != nil {
		return s.runTx(ctx, true, fn)
	}
	sqlTx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	defer func() { _ = sqlTx.Rollback() }() // read-only: nothing to keep
	return fn(ctx, &txn{tx: sqlTx, d: s.d})
}

// maxGroup bounds how many transactions share one SQLite commit, so one failing
// commit costs a bounded number of retries.
const maxGroup = 64

// committer runs SQLite transactions by group commit. Every SQLite transaction here
// takes the database's write lock and every commit pays an fsync (synchronous=FULL:
// a lost commit is a forgotten authorization); on this project's machines an fsync
// takes about 10 ms. Run one at a time, that capped the store at a few dozen
// transactions a second however many callers waited, and left to SQLite's busy
// handler (sleeps with backoff up to 100 ms) it collapsed further. So callers queue
// here; whoever finds no commit running leads: it runs every queued transaction in
// one SQLite transaction, each inside its own savepoint (a failing one is rolled back
// alone), commits once, and hands each caller its own result. Nobody's answer leaves
// before the commit that holds its effect.
type committer struct {
	mu      sync.Mutex
	pending []*groupReq
	leading bool
	commits atomic.Int64 // SQLite commits made, for tests
}

// leadingNow reports whether a commit is running (for tests).
func (c *committer) leadingNow() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leading
}

type groupReq struct {
	ctx      context.Context
	readOnly bool // a View: its function may not write
	fn       func(ctx context.Context, t *txn) error
	done     chan error // buffered: the leader never blocks on it
}

func (s *Store) groupTx(ctx context.Context, readOnly bool, fn func(ctx context.Context, t *txn) error) error {
	r := &groupReq{ctx: ctx, readOnly: readOnly, fn: fn, done: make(chan error, 1)}
	c := s.group
	c.mu.Lock()
	c.pending = append(c.pending, r)
	if c.leading {
		c.mu.Unlock()
		return <-r.done // the leader checks ctx before running fn
	}
	c.leading = true
	for len(c.pending) > 0 {
		n := min(len(c.pending), maxGroup)
		batch := c.pending[:n:n]
		c.pending = append([]*groupReq(nil), c.pending[n:]...)
		c.mu.Unlock()
		s.commitGroup(batch)
		c.mu.Lock()
	}
	c.leading = false
	c.mu.Unlock()
	return <-r.done
}

func (s *Store) commitGroup(batch []*groupReq) {
	results := make([]error, len(batch))
	finish := func() {
		for i, r := range batch {
			r.done <- results[i]
		}
	}
	defer finish()
	// The transaction serves many callers, so no one caller's context may end it.
	sqlTx, err := s.db.BeginTx(context.Background(), nil)
	if err != nil {
		for i := range results {
			results[i] = fmt.Errorf("store: begin: %w", err)
		}
		return
	}
	t := &txn{tx: sqlTx, d: s.d}
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		t.readOnly = false // the savepoint itself
		results[i] = t.atomic(r.ctx, func() (err error) {
			t.readOnly = r.readOnly
			defer func() { t.readOnly = false }()
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("store: transaction function panicked: %v", p)
				}
			}()
			return r.fn(r.ctx, t)
		})
	}
	if err := sqlTx.Commit(); err != nil {
		_ = sqlTx.Rollback()
		for i := range results {
			if results[i] == nil {
				results[i] = fmt.Errorf("store: commit: %w", err)
			}
		}
		return
	}
	s.group.commits.Add(1)
}

// Idempotent is the exactly-once primitive. In ONE transaction it claims
// (scope, requestID), runs fn (the state change) and stores fn's response,
// so the effect and the answer commit together before the answer leaves.
//
//   - First time: fn runs; its response is stored and returned, replayed=false.
//   - Retry with the same requestHash: the stored bytes are returned unchanged,
//     replayed=true, and fn is not called.
//   - Same requestID with a different requestHash: ErrIDReuse (matches ErrConflict).
//   - Concurrent duplicates: the claim row serializes them (PostgreSQL blocks
//     the second INSERT until the first commits; SQLite holds the write lock),
//     so exactly one runs fn and the others return its answer.
//   - fn returns an error: everything rolls back, nothing is stored, and the
//     ID stays free for a later retry. To remember a refusal, return it as a
//     response with a nil error.
//
// fn may be run again after a transient engine error, so it must have no
// effects outside tx.
func (s *Store) Idempotent(ctx context.Context, scope, requestID string, requestHash []byte,
	fn func(ctx context.Context, tx Tx) ([]byte, error)) (response []byte, replayed bool, err error) {
	if err := checkID("scope", scope); err != nil {
		return nil, false, err
	}
	if err := checkID("request ID", requestID); err != nil {
		return nil, false, err
	}
	if len(requestHash) == 0 || len(requestHash) > 64 {
		return nil, false, invalidf("idempotent: request hash must be 1..64 bytes")
	}
	err = s.runTx(ctx, false, func(ctx context.Context, t *txn) error {
		response, replayed = nil, false
		res, err := t.exec(ctx, `INSERT INTO processed_requests (scope, request_id, request_hash, created_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (scope, request_id) DO NOTHING`,
			scope, requestID, requestHash, time.Now().UnixMicro())
		if err != nil {
			return fmt.Errorf("store: idempotent %s/%s: claim: %w", scope, requestID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: idempotent %s/%s: claim: %w", scope, requestID, err)
		} else if n == 0 {
			var hash, resp []byte
			var pending bool
			err := t.queryRow(ctx, `SELECT request_hash, response, response IS NULL FROM processed_requests
				WHERE scope = ? AND request_id = ?`, scope, requestID).Scan(&hash, &resp, &pending)
			if err != nil {
				return fmt.Errorf("store: idempotent %s/%s: read stored answer: %w", scope, requestID, err)
			}
			if !bytes.Equal(hash, requestHash) {
				return fmt.Errorf("store: idempotent %s/%s: %w", scope, requestID, ErrIDReuse)
			}
			if pending {
				// Idempotent's claims commit only together with their response:
				// this is a Claim (of another scope's protocol) not yet answered,
				// or a hand edit.
				return fmt.Errorf("store: idempotent %s/%s: claimed without a response: %w", scope, requestID, ErrConflict)
			}
			if resp == nil {
				resp = []byte{}
			}
			response, replayed = resp, true
			return nil
		}
		out, err := fn(ctx, t)
		if err != nil {
			return err
		}
		if out == nil {
			out = []byte{} // NULL marks an unanswered claim
		}
		if _, err := t.exec(ctx, `UPDATE processed_requests SET response = ? WHERE scope = ? AND request_id = ?`,
			out, scope, requestID); err != nil {
			return fmt.Errorf("store: idempotent %s/%s: store answer: %w", scope, requestID, err)
		}
		response = out
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return response, replayed, nil
}

// PurgeProcessedRequests deletes stored answers created before t and
// reports how many. After that, a retry of a purged request runs again, so
// keep answers longer than any client retries.
func (s *Store) PurgeProcessedRequests(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.runTx(ctx, false, func(ctx context.Context, t *txn) error {
		res, err := t.exec(ctx, `DELETE FROM processed_requests WHERE created_at < ?`, before.UnixMicro())
		if err != nil {
			return fmt.Errorf("store: purge processed requests: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

func checkID(what, v string) error {
	if v == "" || len(v) > maxIDLen {
		return invalidf("%s must be 1..%d bytes", what, maxIDLen)
	}
	return nil
}

// querier is what a txn runs statements on: a *sql.Tx, or the pinned
// *sql.Conn of a PostgreSQL View.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// txn implements Tx on a *sql.Tx (or, for a PostgreSQL View, a *sql.Conn).
type txn struct {
	tx querier
	// readOnly: fn runs in a View, where every write is refused.
	readOnly bool
	d        dialect
	sp       int // savepoint counter
	// pendingAudit: records to insert into audit_pending before the commit;
	// audited: this transaction gave the chainer work.
	pendingAudit []AuditRecord
	audited      bool
}

func (t *txn) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if t.readOnly {
		return nil, errReadOnly
	}
	return t.tx.ExecContext(ctx, t.d.rebind(q), args...)
}

func (t *txn) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.d.rebind(q), args...)
}

func (t *txn) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.d.rebind(q), args...)
}

// atomic runs fn inside a savepoint: if fn fails, its partial writes are
// undone and the transaction stays usable (PostgreSQL otherwise aborts the
// whole transaction after any failed statement). Every Tx write goes through
// it, so a Tx method that returns an error has changed nothing.
func (t *txn) atomic(ctx context.Context, fn func() error) error {
	if t.readOnly {
		return errReadOnly
	}
	t.sp++
	name := fmt.Sprintf("sp%d", t.sp)
	if _, err := t.tx.ExecContext(ctx, "SAVEPOINT "+name); err != nil {
		return fmt.Errorf("store: savepoint: %w", err)
	}
	if err := fn(); err != nil {
		if _, rbErr := t.tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT "+name); rbErr != nil {
			return errors.Join(err, fmt.Errorf("store: rollback to savepoint: %w", rbErr))
		}
		if _, relErr := t.tx.ExecContext(ctx, "RELEASE SAVEPOINT "+name); relErr != nil {
			return errors.Join(err, fmt.Errorf("store: release savepoint: %w", relErr))
		}
		return err
	}
	if !t.d.releaseSavepoints() {
		return nil
	}
	if _, err := t.tx.ExecContext(ctx, "RELEASE SAVEPOINT "+name); err != nil {
		return fmt.Errorf("store: release savepoint: %w", err)
	}
	return nil
}

// notFound maps sql.ErrNoRows to ErrNotFound with context.
func notFound(err error, format string, args ...any) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: "+format+": %w", append(args, ErrNotFound)...)
	}
	return fmt.Errorf("store: "+format+": %w", append(args, err)...)
}

// writeErr classifies a failed write.
func (t *txn) writeErr(err error, format string, args ...any) error {
	switch {
	case t.d.isUnique(err):
		return fmt.Errorf("store: "+format+": already exists: %w", append(args, ErrConflict)...)
	case t.d.isForeignKey(err):
		return fmt.Errorf("store: "+format+": referenced record missing: %w", append(args, ErrNotFound)...)
	}
	return fmt.Errorf("store: "+format+": %w", append(args, err)...)
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
