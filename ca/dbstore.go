package ca

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/store"
)

// DBStore is the durable Store of one Authority on store.DB (SQLite or
// PostgreSQL). Several authorities share one database; each is keyed by its
// issuer name, so the name must be stable for the life of the CA.
//
// Enrollment secrets: the store's table keeps one row per secret and offers
// no update, so "enrolling again replaces the pending secret" is built from
// a per-(role, id) generation counter (the store's atomic per-key counter):
// Enroll takes the next generation and records it in the row, and a
// redemption succeeds only for the row of the newest generation. The row key
// contains a prefix of the secret's hash, so redemption finds the row from
// the offered hash alone.
type DBStore struct {
	db     store.DB
	issuer string
}

// NewDBStore returns the store of the CA named issuer (e.g. "cca") in db.
func NewDBStore(db store.DB, issuer string) (*DBStore, error) {
	if db == nil {
		return nil, errors.New("ca: nil store.DB")
	}
	if issuer == "" || len(issuer) > 64 || strings.ContainsAny(issuer, "/# ") {
		return nil, fmt.Errorf("ca: store issuer name %q must be 1..64 characters without '/', '#' or spaces", issuer)
	}
	return &DBStore{db: db, issuer: issuer}, nil
}

var _ Store = (*DBStore)(nil)

// errSuperseded rolls back a redemption of a secret replaced by a newer one.
var errSuperseded = errors.New("ca: enrollment superseded")

// errRedeemExpired rolls back a redemption of an expired secret.
var errRedeemExpired = errors.New("ca: enrollment expired")

// PutIssued implements Store.
func (s *DBStore) PutIssued(ctx context.Context, rec IssuedCert) error {
	if rec.Serial == nil || rec.Serial.Sign() <= 0 {
		return errors.New("ca: issued certificate without a positive serial")
	}
	cert, err := x509.ParseCertificate(rec.DER)
	if err != nil {
		return fmt.Errorf("ca: store issued certificate: %w", err)
	}
	c := &store.Certificate{
		Issuer: s.issuer, Serial: store.SerialHex(rec.Serial), Role: rec.Role.String(),
		Subject: rec.SubjectID, NotAfter: rec.NotAfter, DER: rec.DER, IssuedAt: rec.IssuedAt,
		KeyHash: store.KeyHashOf(cert.RawSubjectPublicKeyInfo),
	}
	err = s.db.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.InsertCertificate(ctx, c)
	})
	switch {
	case errors.Is(err, store.ErrKeyCertified):
		return fmt.Errorf("ca: store issued certificate: %w", ErrKeyCertified)
	case err != nil:
		return fmt.Errorf("ca: store issued certificate: %w", err)
	}
	return nil
}

// GetIssued implements Store.
func (s *DBStore) GetIssued(ctx context.Context, serial *big.Int) (IssuedCert, error) {
	if serial == nil || serial.Sign() <= 0 {
		return IssuedCert{}, ErrNotFound
	}
	var (
		c   *store.Certificate
		rev *store.Revocation
	)
	err := s.db.View(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		c, err = tx.GetCertificate(ctx, s.issuer, store.SerialHex(serial))
		if err != nil {
			return err
		}
		rev, err = tx.GetRevocation(ctx, s.issuer, store.SerialHex(serial))
		if errors.Is(err, store.ErrNotFound) {
			rev, err = nil, nil
		}
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return IssuedCert{}, ErrNotFound
	}
	if err != nil {
		return IssuedCert{}, fmt.Errorf("ca: get issued certificate: %w", err)
	}
	rec := IssuedCert{Serial: new(big.Int).Set(serial), DER: c.DER, SubjectID: c.Subject, IssuedAt: c.IssuedAt, NotAfter: c.NotAfter}
	if rec.Role, err = pki.ParseRole(c.Role); err != nil {
		return IssuedCert{}, fmt.Errorf("ca: stored certificate %s: %w", c.Serial, err)
	}
	// The purpose is not a column; it is read back from the certificate itself.
	if cert, err := x509.ParseCertificate(c.DER); err == nil {
		rec.Purpose, _ = pki.PurposeOf(cert)
	}
	if rev != nil {
		rec.Revoked, rec.RevokedAt, rec.RevocationReason = true, rev.RevokedAt, rev.Reason
	}
	return rec, nil
}

// Revoke implements Store.
func (s *DBStore) Revoke(ctx context.Context, serial *big.Int, reason int, at time.Time) error {
	if serial == nil || serial.Sign() <= 0 {
		return ErrNotFound
	}
	err := s.db.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.Revoke(ctx, &store.Revocation{Issuer: s.issuer, Serial: store.SerialHex(serial), Reason: reason, RevokedAt: at})
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ErrNotFound
	case errors.Is(err, store.ErrConflict):
		return ErrAlreadyRevoked
	case err != nil:
		return fmt.Errorf("ca: store revocation: %w", err)
	}
	return nil
}

// Revocations implements Store.
func (s *DBStore) Revocations(ctx context.Context) ([]x509.RevocationListEntry, error) {
	var revs []store.Revocation
	if err := s.db.View(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		revs, err = tx.ListRevocations(ctx, s.issuer)
		return err
	}); err != nil {
		return nil, fmt.Errorf("ca: list revocations: %w", err)
	}
	out := make([]x509.RevocationListEntry, 0, len(revs))
	for _, r := range revs {
		serial, ok := new(big.Int).SetString(r.Serial, 16)
		if !ok {
			return nil, fmt.Errorf("ca: stored revocation with malformed serial %q", r.Serial)
		}
		out = append(out, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: r.RevokedAt.UTC(), ReasonCode: r.Reason})
	}
	return out, nil
}

// NextCRLNumber implements Store.
func (s *DBStore) NextCRLNumber(ctx context.Context) (*big.Int, error) {
	var n int64
	if err := s.db.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		n, err = tx.NextCRLNumber(ctx, s.issuer)
		return err
	}); err != nil {
		return nil, fmt.Errorf("ca: next CRL number: %w", err)
	}
	return big.NewInt(n), nil
}

func (s *DBStore) genKey(role pki.Role, id string) string {
	return "enroll/" + s.issuer + "/" + role.String() + "/" + id
}

func (s *DBStore) rowID(role pki.Role, id string, secretHash []byte) string {
	p := secretHash
	if len(p) > 8 {
		p = p[:8]
	}
	return s.issuer + "/" + role.String() + "/" + id + "/" + hex.EncodeToString(p)
}

// PutEnrollment implements Store.
func (s *DBStore) PutEnrollment(ctx context.Context, e Enrollment) error {
	if len(e.SecretHash) < 16 {
		return errors.New("ca: enrollment secret hash too short")
	}
	err := s.db.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		gen, err := tx.NextCRLNumber(ctx, s.genKey(e.Role, e.ID))
		if err != nil {
			return err
		}
		return tx.InsertEnrollmentSecret(ctx, &store.EnrollmentSecret{
			ID: s.rowID(e.Role, e.ID, e.SecretHash), Role: e.Role.String() + "#" + strconv.FormatInt(gen, 10),
			SecretHash: e.SecretHash, ExpiresAt: e.ExpiresAt,
		})
	})
	if err != nil {
		return fmt.Errorf("ca: store enrollment: %w", err)
	}
	return nil
}

// RedeemEnrollment implements Store. In one transaction it bumps the
// generation counter (rolled back on any refusal) and consumes the row; the
// row must be of the generation just before, i.e. the newest enrollment.
func (s *DBStore) RedeemEnrollment(ctx context.Context, role pki.Role, id string, secretHash []byte, at time.Time) (Enrollment, error) {
	out := Enrollment{Role: role, ID: id}
	err := s.db.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		next, err := tx.NextCRLNumber(ctx, s.genKey(role, id))
		if err != nil {
			return err
		}
		rec, err := tx.ConsumeEnrollmentSecret(ctx, s.rowID(role, id, secretHash), secretHash, at)
		if errors.Is(err, store.ErrExpired) {
			return errRedeemExpired
		}
		if err != nil {
			return err
		}
		r, g, ok := strings.Cut(rec.Role, "#")
		gen, perr := strconv.ParseInt(g, 10, 64)
		if !ok || perr != nil || r != role.String() {
			return fmt.Errorf("ca: malformed enrollment record %q", rec.Role)
		}
		if gen != next-1 {
			return errSuperseded
		}
		out.SecretHash, out.ExpiresAt, out.UsedAt = rec.SecretHash, rec.ExpiresAt, rec.UsedAt
		return nil
	})
	switch {
	case errors.Is(err, errRedeemExpired):
		// Judged by the caller: an ExpiresAt not after at reads as expired.
		out.ExpiresAt = at
		return out, nil
	case errors.Is(err, errSuperseded), errors.Is(err, store.ErrNotFound):
		return Enrollment{}, ErrNotFound
	case errors.Is(err, store.ErrConflict):
		return Enrollment{}, ErrAlreadyUsed
	case err != nil:
		return Enrollment{}, fmt.Errorf("ca: redeem enrollment: %w", err)
	}
	return out, nil
}
