package store

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"fmt"
	"time"
)

func (t *txn) InsertCertificate(ctx context.Context, c *Certificate) error {
	switch {
	case checkID("issuer", c.Issuer) != nil, checkID("serial", c.Serial) != nil:
		return fmt.Errorf("store: insert certificate: %w", invalidf("issuer and serial must be 1..%d bytes", maxIDLen))
	case len(c.DER) == 0:
		return fmt.Errorf("store: insert certificate: %w", invalidf("empty DER"))
	case c.NotAfter.IsZero() || c.IssuedAt.IsZero():
		return fmt.Errorf("store: insert certificate: %w", invalidf("times must be set"))
	case len(c.KeyHash) != sha256.Size:
		return fmt.Errorf("store: insert certificate: %w", invalidf("key hash must be %d bytes", sha256.Size))
	}
	return t.atomic(ctx, func() error {
		if _, err := t.exec(ctx, `INSERT INTO certificates (issuer, serial, role, subject, not_after, der, issued_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, c.Issuer, c.Serial, c.Role, c.Subject, micros(c.NotAfter), c.DER,
			micros(c.IssuedAt)); err != nil {
			return t.writeErr(err, "insert certificate %s/%s", c.Issuer, c.Serial)
		}
		// The primary key decides, not a lookup before: two CAs (or replicas) certifying
		// one key at once cannot both commit.
		if _, err := t.exec(ctx, `INSERT INTO certified_keys (key_hash, issuer, serial) VALUES (?, ?, ?)`,
			c.KeyHash, c.Issuer, c.Serial); err != nil {
			if t.d.isUnique(err) {
				return fmt.Errorf("store: insert certificate %s/%s: %w", c.Issuer, c.Serial, ErrKeyCertified)
			}
			return t.writeErr(err, "insert certificate %s/%s: certified key", c.Issuer, c.Serial)
		}
		return nil
	})
}

// ErrKeyCertified refuses a certificate for a public key that a CA of this store
// already certified (key unicity). It is an ErrConflict.
var ErrKeyCertified = fmt.Errorf("%w: public key already certified", ErrConflict)

// KeyHashOf is the Certificate.KeyHash of a DER SubjectPublicKeyInfo.
func KeyHashOf(spki []byte) []byte {
	h := sha256.Sum256(spki)
	return h[:]
}

func (t *txn) GetCertificate(ctx context.Context, issuer, serial string) (*Certificate, error) {
	var c Certificate
	var notAfter, issued int64
	err := t.queryRow(ctx, `SELECT c.issuer, c.serial, c.role, c.subject, c.not_after, c.der, c.issued_at, k.key_hash
		FROM certificates c LEFT JOIN certified_keys k ON k.issuer = c.issuer AND k.serial = c.serial
		WHERE c.issuer = ? AND c.serial = ?`, issuer, serial).
		Scan(&c.Issuer, &c.Serial, &c.Role, &c.Subject, &notAfter, &c.DER, &issued, &c.KeyHash)
	if err != nil {
		return nil, notFound(err, "get certificate %s/%s", issuer, serial)
	}
	c.NotAfter, c.IssuedAt = fromMicros(notAfter), fromMicros(issued)
	return &c, nil
}

func (t *txn) Revoke(ctx context.Context, r *Revocation) error {
	if r.Reason < 0 || r.Reason > 10 || r.Reason == 7 {
		return fmt.Errorf("store: revoke: %w", invalidf("CRL reason %d", r.Reason))
	}
	if r.RevokedAt.IsZero() {
		return fmt.Errorf("store: revoke: %w", invalidf("time must be set"))
	}
	return t.atomic(ctx, func() error {
		if _, err := t.exec(ctx, `INSERT INTO revocations (issuer, serial, reason, revoked_at) VALUES (?, ?, ?, ?)`,
			r.Issuer, r.Serial, r.Reason, micros(r.RevokedAt)); err != nil {
			return t.writeErr(err, "revoke %s/%s", r.Issuer, r.Serial)
		}
		return nil
	})
}

func (t *txn) GetRevocation(ctx context.Context, issuer, serial string) (*Revocation, error) {
	var r Revocation
	var at int64
	err := t.queryRow(ctx, `SELECT issuer, serial, reason, revoked_at FROM revocations WHERE issuer = ? AND serial = ?`,
		issuer, serial).Scan(&r.Issuer, &r.Serial, &r.Reason, &at)
	if err != nil {
		return nil, notFound(err, "get revocation %s/%s", issuer, serial)
	}
	r.RevokedAt = fromMicros(at)
	return &r, nil
}

func (t *txn) ListRevocations(ctx context.Context, issuer string) ([]Revocation, error) {
	rows, err := t.query(ctx, `SELECT issuer, serial, reason, revoked_at FROM revocations
		WHERE issuer = ? ORDER BY revoked_at, serial`, issuer)
	if err != nil {
		return nil, fmt.Errorf("store: list revocations %s: %w", issuer, err)
	}
	defer rows.Close()
	var out []Revocation
	for rows.Next() {
		var r Revocation
		var at int64
		if err := rows.Scan(&r.Issuer, &r.Serial, &r.Reason, &at); err != nil {
			return nil, fmt.Errorf("store: list revocations %s: %w", issuer, err)
		}
		r.RevokedAt = fromMicros(at)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list revocations %s: %w", issuer, err)
	}
	return out, nil
}

func (t *txn) NextCRLNumber(ctx context.Context, issuer string) (int64, error) {
	if err := checkID("issuer", issuer); err != nil {
		return 0, fmt.Errorf("store: next CRL number: %w", err)
	}
	var n int64
	err := t.atomic(ctx, func() error {
		// An upsert is atomic on both engines, so replicas never reuse a number.
		err := t.queryRow(ctx, `INSERT INTO crl_numbers (issuer, number) VALUES (?, 1)
			ON CONFLICT (issuer) DO UPDATE SET number = crl_numbers.number + 1
			RETURNING number`, issuer).Scan(&n)
		if err != nil {
			return fmt.Errorf("store: next CRL number %s: %w", issuer, err)
		}
		return nil
	})
	return n, err
}

func (t *txn) InsertEnrollmentSecret(ctx context.Context, e *EnrollmentSecret) error {
	switch {
	case checkID("enrollment ID", e.ID) != nil:
		return fmt.Errorf("store: insert enrollment secret: %w", invalidf("ID must be 1..%d bytes", maxIDLen))
	case len(e.SecretHash) < 16 || len(e.SecretHash) > 64:
		return fmt.Errorf("store: insert enrollment secret: %w", invalidf("secret hash must be 16..64 bytes"))
	case e.ExpiresAt.IsZero():
		return fmt.Errorf("store: insert enrollment secret: %w", invalidf("expiry must be set"))
	}
	return t.atomic(ctx, func() error {
		if _, err := t.exec(ctx, `INSERT INTO enrollment_secrets (id, role, secret_hash, expires_at, used_at)
			VALUES (?, ?, ?, ?, NULL)`, e.ID, e.Role, e.SecretHash, micros(e.ExpiresAt)); err != nil {
			return t.writeErr(err, "insert enrollment secret %s", e.ID)
		}
		return nil
	})
}

func (t *txn) ConsumeEnrollmentSecret(ctx context.Context, id string, secretHash []byte, now time.Time) (*EnrollmentSecret, error) {
	var out *EnrollmentSecret
	err := t.atomic(ctx, func() error {
		var e EnrollmentSecret
		var expires int64
		var used sql.NullInt64
		err := t.queryRow(ctx, `SELECT id, role, secret_hash, expires_at, used_at FROM enrollment_secrets WHERE id = ?`, id).
			Scan(&e.ID, &e.Role, &e.SecretHash, &expires, &used)
		if err != nil {
			return notFound(err, "consume enrollment secret %s", id)
		}
		if subtle.ConstantTimeCompare(e.SecretHash, secretHash) != 1 {
			return fmt.Errorf("store: consume enrollment secret %s: %w", id, ErrNotFound)
		}
		if used.Valid {
			return fmt.Errorf("store: consume enrollment secret %s: already used: %w", id, ErrConflict)
		}
		e.ExpiresAt = fromMicros(expires)
		if !now.Before(e.ExpiresAt) {
			return fmt.Errorf("store: consume enrollment secret %s: %w", id, ErrExpired)
		}
		// The used_at IS NULL condition makes the claim atomic against a
		// concurrent consumer that read the row before we updated it.
		res, err := t.exec(ctx, `UPDATE enrollment_secrets SET used_at = ? WHERE id = ? AND used_at IS NULL`,
			micros(now), id)
		if err != nil {
			return fmt.Errorf("store: consume enrollment secret %s: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: consume enrollment secret %s: %w", id, err)
		} else if n == 0 {
			return fmt.Errorf("store: consume enrollment secret %s: already used: %w", id, ErrConflict)
		}
		e.UsedAt = fromMicros(micros(now))
		out = &e
		return nil
	})
	return out, err
}
