package store

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package that matches one of
// these wraps it with %w and context, so callers test with errors.Is.
var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: the write clashes with existing state (duplicate key,
	// unexpected status, closed batch, already revoked, ...).
	ErrConflict = errors.New("store: conflict")
	// ErrIDReuse: a request ID already used for a different request. It
	// also matches ErrConflict.
	ErrIDReuse = fmt.Errorf("%w: request ID reused with a different request", ErrConflict)
	// ErrLimitExceeded: an amount would exceed what is allowed (capture
	// above the authorized amount, credit above the captured total).
	ErrLimitExceeded = errors.New("store: limit exceeded")
	// ErrExpired: the record exists but is past its expiry.
	ErrExpired = errors.New("store: expired")
	// ErrInvalid: the caller passed a malformed record or argument.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrAuditBroken: the audit chain does not verify; see *AuditError.
	ErrAuditBroken = errors.New("store: audit chain broken")
)

// AuditError describes the first broken point in the audit chain.
type AuditError struct {
	Seq    int64  // sequence number where the chain breaks
	Reason string // e.g. "record missing", "hash mismatch"
}

func (e *AuditError) Error() string {
	return fmt.Sprintf("store: audit chain broken at seq %d: %s", e.Seq, e.Reason)
}

// Unwrap lets errors.Is(err, ErrAuditBroken) match.
func (e *AuditError) Unwrap() error { return ErrAuditBroken }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
