package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ClaimState is what Claim found for a request.
type ClaimState int

const (
	// ClaimNew: the request was unknown; the caller now holds its claim.
	ClaimNew ClaimState = iota + 1
	// ClaimTakenOver: another holder's lease had run out (a crashed replica); the
	// caller now holds the claim.
	ClaimTakenOver
	// ClaimPending: another holder's claim is live; the caller must not act.
	ClaimPending
	// ClaimAnswered: the answer is stored (Claim.Response); nothing is to be done.
	ClaimAnswered
)

func (c ClaimState) String() string {
	switch c {
	case ClaimNew:
		return "new"
	case ClaimTakenOver:
		return "taken over"
	case ClaimPending:
		return "pending"
	case ClaimAnswered:
		return "answered"
	}
	return fmt.Sprintf("ClaimState(%d)", int(c))
}

// Claim is the outcome of Store.Claim.
type Claim struct {
	State ClaimState
	// Token identifies the holder (ClaimNew, ClaimTakenOver): pass it to
	// ReleaseClaim.
	Token []byte
	// Response is the stored answer (ClaimAnswered).
	Response []byte
	// Until is when the live claim's lease runs out (ClaimPending).
	Until time.Time
}

// Holds reports whether the caller now holds the claim.
func (c Claim) Holds() bool { return c.State == ClaimNew || c.State == ClaimTakenOver }

// Claim is the first step of the two-step exactly-once primitive, for requests
// whose effect reaches outside the store (the gateway asks the issuer): it commits,
// in its own transaction, a claim on (scope, requestID) BEFORE the caller acts, so
// that a concurrent or retried request on any replica sees it.
//
//   - Unknown request: a claim held until now+lease is committed; ClaimNew.
//   - Answered (by CompleteClaim or Idempotent) with the same requestHash:
//     ClaimAnswered with the stored bytes.
//   - Claimed, lease live: ClaimPending; the caller must not act (answer "retry").
//   - Claimed, lease run out (its holder crashed or hangs): the claim passes to the
//     caller (ClaimTakenOver), who acts again — so the outside effect must itself be
//     idempotent per requestID. Of two takers at once, exactly one gets it.
//   - Same requestID with a different requestHash: ErrIDReuse (matches ErrConflict).
//
// The holder then calls CompleteClaim (effect and answer in one transaction) or,
// when acting failed, ReleaseClaim. now is the caller's clock (replicas' clocks
// should agree to well within the lease).
func (s *Store) Claim(ctx context.Context, scope, requestID string, requestHash []byte, now time.Time, lease time.Duration) (Claim, error) {
	if err := checkClaimArgs(scope, requestID, requestHash); err != nil {
		return Claim{}, err
	}
	if lease <= 0 {
		return Claim{}, invalidf("claim: lease must be positive")
	}
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return Claim{}, fmt.Errorf("store: claim %s/%s: token: %w", scope, requestID, err)
	}
	until := now.Add(lease).UnixMicro()
	var out Claim
	err := s.runTx(ctx, false, func(ctx context.Context, t *txn) error {
		out = Claim{}
		res, err := t.exec(ctx, `INSERT INTO processed_requests (scope, request_id, request_hash, created_at, claim_token, claimed_until)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, request_id) DO NOTHING`,
			scope, requestID, requestHash, time.Now().UnixMicro(), token, until)
		if err != nil {
			return fmt.Errorf("store: claim %s/%s: %w", scope, requestID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: claim %s/%s: %w", scope, requestID, err)
		} else if n == 1 {
			out = Claim{State: ClaimNew, Token: token}
			return nil
		}
		var (
			hash, resp []byte
			pending    bool
			held       sql.NullInt64
		)
		if err := t.queryRow(ctx, `SELECT request_hash, response, response IS NULL, claimed_until FROM processed_requests
			WHERE scope = ? AND request_id = ?`, scope, requestID).Scan(&hash, &resp, &pending, &held); err != nil {
			return fmt.Errorf("store: claim %s/%s: read: %w", scope, requestID, err)
		}
		if !bytes.Equal(hash, requestHash) {
			return fmt.Errorf("store: claim %s/%s: %w", scope, requestID, ErrIDReuse)
		}
		if !pending {
			if resp == nil {
				resp = []byte{}
			}
			out = Claim{State: ClaimAnswered, Response: resp}
			return nil
		}
		if held.Valid && held.Int64 >= now.UnixMicro() {
			out = Claim{State: ClaimPending, Until: fromMicros(held.Int64)}
			return nil
		}
		// The lease ran out. The condition is checked again by the UPDATE itself: on
		// PostgreSQL a second taker waits on the row lock, then finds the new lease
		// and updates nothing.
		res, err = t.exec(ctx, `UPDATE processed_requests SET claim_token = ?, claimed_until = ?
			WHERE scope = ? AND request_id = ? AND response IS NULL AND (claimed_until IS NULL OR claimed_until < ?)`,
			token, until, scope, requestID, now.UnixMicro())
		if err != nil {
			return fmt.Errorf("store: claim %s/%s: take over: %w", scope, requestID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: claim %s/%s: take over: %w", scope, requestID, err)
		} else if n == 1 {
			out = Claim{State: ClaimTakenOver, Token: token}
			return nil
		}
		// Someone else took it over (or answered) first: report what is there now.
		if err := t.queryRow(ctx, `SELECT response, response IS NULL, claimed_until FROM processed_requests
			WHERE scope = ? AND request_id = ?`, scope, requestID).Scan(&resp, &pending, &held); err != nil {
			return fmt.Errorf("store: claim %s/%s: read: %w", scope, requestID, err)
		}
		if !pending {
			if resp == nil {
				resp = []byte{}
			}
			out = Claim{State: ClaimAnswered, Response: resp}
			return nil
		}
		out = Claim{State: ClaimPending, Until: fromMicros(held.Int64)}
		return nil
	})
	if err != nil {
		return Claim{}, err
	}
	return out, nil
}

// ErrClaimLost: CompleteClaim found no claim to complete (it was released or purged).
var ErrClaimLost = errors.New("store: claim lost")

// CompleteClaim is the second step after Claim: in ONE transaction it runs fn (the
// state change) and stores fn's response as the answer to (scope, requestID), as
// Idempotent does. If the answer was stored meanwhile — the claim was taken over and
// the new holder finished first — fn is not run and the stored bytes are returned,
// replayed=true: every caller answers the same bytes. Concurrent completions
// serialize on the claim row. fn returns an error: nothing is stored and the claim
// stays as it was (the caller then releases it, or its lease runs out). No claim row
// at all: ErrClaimLost. fn may run again after a transient engine error, so it must
// have no effects outside tx.
func (s *Store) CompleteClaim(ctx context.Context, scope, requestID string, requestHash []byte,
	fn func(ctx context.Context, tx Tx) ([]byte, error)) (response []byte, replayed bool, err error) {
	if err := checkClaimArgs(scope, requestID, requestHash); err != nil {
		return nil, false, err
	}
	err = s.runTx(ctx, false, func(ctx context.Context, t *txn) error {
		response, replayed = nil, false
		// A write first, to hold the row (PostgreSQL: until commit) while deciding.
		res, err := t.exec(ctx, `UPDATE processed_requests SET request_hash = request_hash WHERE scope = ? AND request_id = ?`,
			scope, requestID)
		if err != nil {
			return fmt.Errorf("store: complete claim %s/%s: %w", scope, requestID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: complete claim %s/%s: %w", scope, requestID, err)
		} else if n == 0 {
			return fmt.Errorf("store: complete claim %s/%s: %w", scope, requestID, ErrClaimLost)
		}
		var hash, resp []byte
		var pending bool
		if err := t.queryRow(ctx, `SELECT request_hash, response, response IS NULL FROM processed_requests
			WHERE scope = ? AND request_id = ?`, scope, requestID).Scan(&hash, &resp, &pending); err != nil {
			return fmt.Errorf("store: complete claim %s/%s: read: %w", scope, requestID, err)
		}
		if !bytes.Equal(hash, requestHash) {
			return fmt.Errorf("store: complete claim %s/%s: %w", scope, requestID, ErrIDReuse)
		}
		if !pending {
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
		if _, err := t.exec(ctx, `UPDATE processed_requests SET response = ?, claim_token = NULL, claimed_until = NULL
			WHERE scope = ? AND request_id = ?`, out, scope, requestID); err != nil {
			return fmt.Errorf("store: complete claim %s/%s: store answer: %w", scope, requestID, err)
		}
		response = out
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return response, replayed, nil
}

// ReleaseClaim gives up the claim the caller holds (token from Claim), so that a
// retry may claim the request at once instead of waiting out the lease. A claim
// taken over by someone else, or already answered, is left alone. Releasing is a
// courtesy: a holder that cannot release (it crashed, the store is down) leaves a
// claim that is taken over once its lease runs out.
func (s *Store) ReleaseClaim(ctx context.Context, scope, requestID string, token []byte) error {
	if err := checkID("scope", scope); err != nil {
		return err
	}
	if err := checkID("request ID", requestID); err != nil {
		return err
	}
	return s.runTx(ctx, false, func(ctx context.Context, t *txn) error {
		if _, err := t.exec(ctx, `DELETE FROM processed_requests
			WHERE scope = ? AND request_id = ? AND response IS NULL AND claim_token = ?`, scope, requestID, token); err != nil {
			return fmt.Errorf("store: release claim %s/%s: %w", scope, requestID, err)
		}
		return nil
	})
}

func checkClaimArgs(scope, requestID string, requestHash []byte) error {
	if err := checkID("scope", scope); err != nil {
		return err
	}
	if err := checkID("request ID", requestID); err != nil {
		return err
	}
	if len(requestHash) == 0 || len(requestHash) > 64 {
		return invalidf("claim: request hash must be 1..64 bytes")
	}
	return nil
}
