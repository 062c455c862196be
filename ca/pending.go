package ca

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/setpay/setpay/pki"
)

// Pending request states.
const (
	PendingWaiting  = "pending"
	PendingIssued   = "issued"
	PendingRejected = "rejected"
)

// PendingRequest is a merchant or gateway request held for operator
// approval: its proofs of possession passed and its enrollment secret is
// spent, so it holds nothing secret, only public keys (and, once approved,
// the certificates).
type PendingRequest struct {
	ID          string         `json:"id"`
	State       string         `json:"state"`
	Accepted    AcceptedEntity `json:"accepted"`
	CreatedAt   time.Time      `json:"created_at"`
	DecidedAt   time.Time      `json:"decided_at,omitzero"`
	Signature   []byte         `json:"signature_certificate,omitempty"`
	KeyExchange []byte         `json:"key_exchange_certificate,omitempty"`
}

// PendingQueue keeps pending requests as one JSON file each in a directory
// (<ca-dir>/pending), written atomically, so `setpay ca approve` in another
// process and the serving process share them and they survive restarts.
type PendingQueue struct{ dir string }

// maxPendingFile bounds a pending file read back from disk.
const maxPendingFile = 64 << 10

// NewPendingQueue opens (and creates, 0700) the queue directory.
func NewPendingQueue(dir string) (*PendingQueue, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: pending queue: %w", err)
	}
	return &PendingQueue{dir: dir}, nil
}

// ValidRequestID reports whether id has the form NewRequestID makes
// (32 lowercase hex digits), so it is safe as a file name.
func ValidRequestID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func (q *PendingQueue) path(id string) string { return filepath.Join(q.dir, id+".json") }

// Add stores a new pending request and returns its id.
func (q *PendingQueue) Add(p AcceptedEntity, now time.Time) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	r := PendingRequest{ID: hex.EncodeToString(b), State: PendingWaiting, Accepted: p, CreatedAt: now.UTC()}
	return r.ID, q.Put(r)
}

// Put writes r (atomically: temp file and rename).
func (q *PendingQueue) Put(r PendingRequest) error {
	if !ValidRequestID(r.ID) {
		return errors.New("ca: malformed request id")
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := q.path(r.ID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("ca: pending queue: %w", err)
	}
	if err := os.Rename(tmp, q.path(r.ID)); err != nil {
		return fmt.Errorf("ca: pending queue: %w", err)
	}
	return nil
}

// Get reads one request; ErrNotFound if there is none with this id.
func (q *PendingQueue) Get(id string) (PendingRequest, error) {
	if !ValidRequestID(id) {
		return PendingRequest{}, ErrNotFound
	}
	b, err := os.ReadFile(q.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return PendingRequest{}, ErrNotFound
	}
	if err != nil {
		return PendingRequest{}, fmt.Errorf("ca: pending queue: %w", err)
	}
	return parsePending(b, id)
}

func parsePending(b []byte, id string) (PendingRequest, error) {
	var r PendingRequest
	if len(b) > maxPendingFile {
		return r, errors.New("ca: pending request file too large")
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("ca: pending request %s: %w", id, err)
	}
	if r.ID != id || (r.State != PendingWaiting && r.State != PendingIssued && r.State != PendingRejected) ||
		(r.Accepted.Role != pki.RoleMerchant && r.Accepted.Role != pki.RoleGateway) {
		return r, fmt.Errorf("ca: pending request %s is malformed", id)
	}
	return r, nil
}

// List returns every request, oldest first.
func (q *PendingQueue) List() ([]PendingRequest, error) {
	ents, err := os.ReadDir(q.dir)
	if err != nil {
		return nil, fmt.Errorf("ca: pending queue: %w", err)
	}
	var out []PendingRequest
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !ValidRequestID(id) {
			continue
		}
		r, err := q.Get(id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// Decide approves (issues) or rejects a waiting request. A lock file keeps
// two operators from issuing the same request twice.
func (q *PendingQueue) Decide(ctx context.Context, h *Hierarchy, id string, approve bool, now time.Time) (PendingRequest, error) {
	r, err := q.Get(id)
	if err != nil {
		return r, err
	}
	if r.State != PendingWaiting {
		return r, fmt.Errorf("ca: request %s is already %s", id, r.State)
	}
	lock := q.path(id) + ".lock"
	f, err := os.OpenFile(lock, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return r, fmt.Errorf("ca: request %s is being decided elsewhere: %w", id, err)
	}
	_ = f.Close()
	defer os.Remove(lock)
	r.DecidedAt = now.UTC()
	if !approve {
		r.State = PendingRejected
		return r, q.Put(r)
	}
	a := h.Issuing(r.Accepted.Role)
	if a == nil {
		return r, fmt.Errorf("ca: no issuing CA for %s", r.Accepted.Role)
	}
	certs, err := a.IssueAccepted(ctx, r.Accepted)
	if err != nil {
		return r, err
	}
	r.State, r.Signature, r.KeyExchange = PendingIssued, certs.Signature.Raw, certs.KeyExchange.Raw
	return r, q.Put(r)
}
