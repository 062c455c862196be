package ca

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"github.com/setpay/setpay/pki"
)

// Enroll registers a merchant or gateway id and returns its single-use
// enrollment secret (256 random bits, base64url). Only the SHA-256 of the
// secret is stored; enrolling the same id again replaces the pending secret.
// The secret must reach the entity out of band and is never logged.
func (a *Authority) Enroll(ctx context.Context, role pki.Role, id string) (string, error) {
	if (role != pki.RoleMerchant && role != pki.RoleGateway) || role.Issuer() != a.role {
		return "", fail(ReasonRoleNotAllowed, "a %s does not enroll %s entities", a.role, role)
	}
	if err := pki.ValidateEntityID(id); err != nil {
		return "", &Error{Reason: ReasonBadRequest, Err: err}
	}
	raw := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, raw); err != nil {
		return "", fmt.Errorf("ca: enrollment secret: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(raw)
	h := sha256.Sum256([]byte(secret))
	now := a.now()
	e := Enrollment{Role: role, ID: id, SecretHash: h[:], CreatedAt: now, ExpiresAt: now.Add(a.enrTTL)}
	if err := a.store.PutEnrollment(ctx, e); err != nil {
		return "", fmt.Errorf("ca: store enrollment: %w", err)
	}
	a.log.InfoContext(ctx, "entity enrolled", "role", role.String(), "id", id, "expires", e.ExpiresAt.UTC())
	return secret, nil
}

// redeem spends the enrollment secret of (role, id).
func (a *Authority) redeem(ctx context.Context, role pki.Role, id, secret string) error {
	if secret == "" {
		return fail(ReasonEnrollmentInvalid, "no enrollment secret")
	}
	h := sha256.Sum256([]byte(secret))
	now := a.now()
	e, err := a.store.RedeemEnrollment(ctx, role, id, h[:], now)
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrSecretMismatch):
		// Same answer for unknown id and wrong secret: no enumeration of enrolled ids.
		return fail(ReasonEnrollmentInvalid, "no pending enrollment for %s %q with this secret", role, id)
	case errors.Is(err, ErrAlreadyUsed):
		if e.UsedAt.IsZero() { // a store may not report when
			return fail(ReasonEnrollmentUsed, "enrollment of %s %q was already redeemed", role, id)
		}
		return fail(ReasonEnrollmentUsed, "enrollment of %s %q was redeemed at %s", role, id, e.UsedAt.UTC().Format("2006-01-02T15:04:05Z"))
	case err != nil:
		return fmt.Errorf("ca: redeem enrollment: %w", err)
	}
	if !now.Before(e.ExpiresAt) {
		return fail(ReasonEnrollmentExpired, "enrollment of %s %q expired at %s", role, id, e.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z"))
	}
	return nil
}
