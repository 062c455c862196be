package ca

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/setpay/setpay/pki"
)

// IssuedCert is the CA's record of one certificate it signed.
type IssuedCert struct {
	Serial    *big.Int
	DER       []byte
	Role      pki.Role
	Purpose   pki.Purpose
	SubjectID string // entity id or cardholder id; never card data
	IssuedAt  time.Time
	NotAfter  time.Time

	Revoked          bool
	RevokedAt        time.Time
	RevocationReason int
}

// Enrollment is a pending registration of a merchant or gateway. Only the
// SHA-256 of the secret is kept: the secret is 256 random bits, so a fast
// hash suffices and a leaked store reveals nothing usable.
type Enrollment struct {
	Role       pki.Role
	ID         string
	SecretHash []byte
	CreatedAt  time.Time
	ExpiresAt  time.Time
	UsedAt     time.Time // zero until redeemed
}

// Store persistence errors.
var (
	ErrNotFound       = errors.New("ca: not found")
	ErrAlreadyRevoked = errors.New("ca: already revoked")
	ErrAlreadyUsed    = errors.New("ca: enrollment already used")
	ErrSecretMismatch = errors.New("ca: enrollment secret mismatch")
	// ErrKeyCertified: PutIssued refused a certificate whose public key a CA of
	// the same store already certified (key unicity).
	ErrKeyCertified = errors.New("ca: public key already certified")
)

// CertStore keeps one CA's issued certificates, revocations and CRL counter.
// Implementations must make Revoke and NextCRLNumber atomic.
type CertStore interface {
	// PutIssued records rec; ErrKeyCertified if its public key was certified
	// before, by this CA or any CA sharing the store, in any role. The refusal
	// must be atomic with the insert (a unique key, not a lookup before).
	PutIssued(ctx context.Context, rec IssuedCert) error
	GetIssued(ctx context.Context, serial *big.Int) (IssuedCert, error)
	// Revoke marks serial revoked; ErrNotFound or ErrAlreadyRevoked otherwise.
	Revoke(ctx context.Context, serial *big.Int, reason int, at time.Time) error
	// Revocations lists every revoked certificate for the next CRL.
	Revocations(ctx context.Context) ([]x509.RevocationListEntry, error)
	// NextCRLNumber returns a number strictly greater than any returned before.
	NextCRLNumber(ctx context.Context) (*big.Int, error)
}

// EnrollmentStore keeps pending merchant/gateway enrollments.
type EnrollmentStore interface {
	// PutEnrollment stores e, replacing any pending enrollment of (e.Role, e.ID).
	PutEnrollment(ctx context.Context, e Enrollment) error
	// RedeemEnrollment atomically marks the enrollment of (role, id) used if its
	// secret hash equals secretHash (compared in constant time) and it is
	// unused, and returns it. Errors: ErrNotFound, ErrSecretMismatch,
	// ErrAlreadyUsed. Expiry is judged by the caller on the returned record.
	RedeemEnrollment(ctx context.Context, role pki.Role, id string, secretHash []byte, at time.Time) (Enrollment, error)
}

// Store is everything one Authority persists; the lead wires a durable
// implementation, MemStore serves tests and single-process use.
type Store interface {
	CertStore
	EnrollmentStore
}

// MemStore is an in-memory Store for tests and single-process use.
type MemStore struct {
	mu          sync.Mutex
	issued      map[string]*IssuedCert
	crlNumber   *big.Int
	enrollments map[string]*Enrollment
	keys        *memKeys
}

// memKeys is the set of certified public keys (SHA-256 of the SPKI) shared by the
// MemStores of one hierarchy.
type memKeys struct {
	mu   sync.Mutex
	seen map[[32]byte]bool
}

// claim records the key of a certificate DER; false if it was certified before.
func (k *memKeys) claim(der []byte) (bool, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return false, fmt.Errorf("ca: issued certificate: %w", err)
	}
	h := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.seen[h] {
		return false, nil
	}
	k.seen[h] = true
	return true, nil
}

// NewMemStore returns an empty in-memory store with its own set of certified keys.
func NewMemStore() *MemStore { return newMemStore(&memKeys{seen: map[[32]byte]bool{}}) }

// NewMemStores returns a constructor of empty in-memory stores that share one set
// of certified keys: the stores of one hierarchy, among which key unicity holds.
func NewMemStores() func(pki.Role) Store {
	keys := &memKeys{seen: map[[32]byte]bool{}}
	return func(pki.Role) Store { return newMemStore(keys) }
}

func newMemStore(keys *memKeys) *MemStore {
	return &MemStore{issued: map[string]*IssuedCert{}, crlNumber: new(big.Int), enrollments: map[string]*Enrollment{}, keys: keys}
}

func serialKey(s *big.Int) string { return s.Text(16) }
func enrollKey(r pki.Role, id string) string {
	return fmt.Sprintf("%d/%s", int(r), id)
}

// PutIssued implements Store.
func (m *MemStore) PutIssued(_ context.Context, rec IssuedCert) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := serialKey(rec.Serial)
	if _, ok := m.issued[k]; ok {
		return fmt.Errorf("ca: duplicate serial %s", k)
	}
	if fresh, err := m.keys.claim(rec.DER); err != nil {
		return err
	} else if !fresh {
		return ErrKeyCertified
	}
	m.issued[k] = &rec
	return nil
}

// GetIssued implements Store.
func (m *MemStore) GetIssued(_ context.Context, serial *big.Int) (IssuedCert, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.issued[serialKey(serial)]
	if !ok {
		return IssuedCert{}, ErrNotFound
	}
	return *r, nil
}

// Revoke implements Store.
func (m *MemStore) Revoke(_ context.Context, serial *big.Int, reason int, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.issued[serialKey(serial)]
	if !ok {
		return ErrNotFound
	}
	if r.Revoked {
		return ErrAlreadyRevoked
	}
	r.Revoked, r.RevokedAt, r.RevocationReason = true, at, reason
	return nil
}

// Revocations implements Store.
func (m *MemStore) Revocations(_ context.Context) ([]x509.RevocationListEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []x509.RevocationListEntry
	for _, r := range m.issued {
		if r.Revoked {
			out = append(out, x509.RevocationListEntry{SerialNumber: new(big.Int).Set(r.Serial), RevocationTime: r.RevokedAt, ReasonCode: r.RevocationReason})
		}
	}
	return out, nil
}

// NextCRLNumber implements Store.
func (m *MemStore) NextCRLNumber(_ context.Context) (*big.Int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.crlNumber.Add(m.crlNumber, big.NewInt(1))
	return new(big.Int).Set(m.crlNumber), nil
}

// PutEnrollment implements Store.
func (m *MemStore) PutEnrollment(_ context.Context, e Enrollment) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.enrollments[enrollKey(e.Role, e.ID)] = &e
	return nil
}

// RedeemEnrollment implements Store.
func (m *MemStore) RedeemEnrollment(_ context.Context, role pki.Role, id string, secretHash []byte, at time.Time) (Enrollment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enrollments[enrollKey(role, id)]
	if !ok {
		return Enrollment{}, ErrNotFound
	}
	if subtle.ConstantTimeCompare(e.SecretHash, secretHash) != 1 {
		return Enrollment{}, ErrSecretMismatch
	}
	if !e.UsedAt.IsZero() {
		return *e, ErrAlreadyUsed
	}
	e.UsedAt = at
	return *e, nil
}
