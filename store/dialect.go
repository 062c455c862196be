package store

import (
	"errors"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect is the small layer that hides the differences between SQLite and
// PostgreSQL. All SQL in this package is written once with '?' placeholders.
type dialect interface {
	name() string
	// rebind turns '?' placeholders into the engine's form.
	rebind(q string) string
	// ddl adapts a migration statement (type names).
	ddl(stmt string) string
	// migrationLock is run first inside the migration transaction so that
	// several processes opening the same database apply migrations once.
	migrationLock() string
	isUnique(err error) bool
	isForeignKey(err error) bool
	// isRetryable reports transient errors after which the whole
	// transaction may be run again (deadlock, serialization, busy).
	isRetryable(err error) bool
	// chainInline reports whether audit records are linked into the chain
	// inside the transaction that appends them (the engine serializes
	// writers anyway) rather than after it commits, by the chainer.
	chainInline() bool
	// releaseSavepoints reports whether atomic releases a savepoint after
	// success. Releasing is only bookkeeping: an unreleased savepoint ends
	// with its transaction, and a later rollback to an outer one still undoes
	// it. On PostgreSQL every RELEASE is one more round trip.
	releaseSavepoints() bool
	// forUpdate is the suffix of a SELECT that locks the rows it reads.
	forUpdate() string
}

var autoIDRe = regexp.MustCompile(`\bAUTOID\b`)

type sqliteDialect struct{}

func (sqliteDialect) name() string           { return "sqlite" }
func (sqliteDialect) rebind(q string) string { return q }
func (sqliteDialect) ddl(s string) string {
	return autoIDRe.ReplaceAllString(s, "INTEGER PRIMARY KEY AUTOINCREMENT")
}

// SQLite has one writer at a time, so holding the chain head for the rest of a
// transaction costs nothing more.
func (sqliteDialect) chainInline() bool { return true }

// SQLite's group commit runs up to maxGroup callers' functions, each with its
// savepoints, in one transaction: release them rather than nest hundreds.
func (sqliteDialect) releaseSavepoints() bool { return true }

// A write transaction holds the whole database already.
func (sqliteDialect) forUpdate() string { return "" }

// The migration transaction is BEGIN IMMEDIATE (see _txlock), which already
// holds the database write lock.
func (sqliteDialect) migrationLock() string { return "" }

func sqliteCode(err error) (int, bool) {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code(), true
	}
	return 0, false
}

func (sqliteDialect) isUnique(err error) bool {
	c, ok := sqliteCode(err)
	return ok && (c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

func (sqliteDialect) isForeignKey(err error) bool {
	c, ok := sqliteCode(err)
	return ok && c == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

func (sqliteDialect) isRetryable(err error) bool {
	c, ok := sqliteCode(err)
	return ok && (c&0xff == sqlite3.SQLITE_BUSY || c&0xff == sqlite3.SQLITE_LOCKED)
}

type pgDialect struct{}

func (pgDialect) name() string { return "postgres" }

func (pgDialect) rebind(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

var blobRe = regexp.MustCompile(`\bBLOB\b`)

func (pgDialect) ddl(s string) string {
	s = blobRe.ReplaceAllString(s, "BYTEA")
	return autoIDRe.ReplaceAllString(s, "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
}

// PostgreSQL runs transactions side by side; a chain head locked by each of
// them would queue every one behind the others' commits.
func (pgDialect) chainInline() bool { return false }

// A PostgreSQL subtransaction's XID stays with its top-level transaction
// whether or not it is released, so keeping savepoints costs nothing there.
func (pgDialect) releaseSavepoints() bool { return false }

func (pgDialect) forUpdate() string { return " FOR UPDATE" }

// An arbitrary constant key for the transaction-scoped advisory lock.
func (pgDialect) migrationLock() string { return "SELECT pg_advisory_xact_lock(7302158461)" }

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func (pgDialect) isUnique(err error) bool     { return pgCode(err) == "23505" }
func (pgDialect) isForeignKey(err error) bool { return pgCode(err) == "23503" }

func (pgDialect) isRetryable(err error) bool {
	switch pgCode(err) {
	case "40001", "40P01": // serialization_failure, deadlock_detected
		return true
	}
	return false
}
