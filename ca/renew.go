package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/setpay/setpay/pki"
)

// Renew issues a successor of current, an end-entity certificate this CA
// issued that is still valid and not revoked, for the key in csr (a new key:
// renewal is key rollover). Role, purpose and subject id are taken from the
// CA's own record, never from the request. The caller must already have
// authenticated the request with current's key (see Server.Renew). A
// cardholder successor ends no later than current (the CA does not know the
// card expiry any more). current is then revoked as superseded.
func (a *Authority) Renew(ctx context.Context, current *x509.Certificate, csrDER []byte, validity time.Duration) (*x509.Certificate, error) {
	if current == nil || current.SerialNumber == nil {
		return nil, fail(ReasonBadRequest, "no current certificate")
	}
	rec, err := a.store.GetIssued(ctx, current.SerialNumber)
	if errors.Is(err, ErrNotFound) {
		return nil, fail(ReasonUnknownSerial, "serial %s was not issued by this CA", current.SerialNumber.Text(16))
	}
	if err != nil {
		return nil, fmt.Errorf("ca: renew: %w", err)
	}
	if !bytes.Equal(rec.DER, current.Raw) {
		return nil, fail(ReasonUnknownSerial, "certificate does not match the CA's record")
	}
	if rec.Revoked {
		return nil, fail(ReasonAlreadyRevoked, "certificate %s is revoked", current.SerialNumber.Text(16))
	}
	now := a.now()
	if !now.Before(current.NotAfter) {
		return nil, fail(ReasonBadRequest, "certificate expired; register again")
	}
	if rec.Role.IsCA() {
		return nil, fail(ReasonRoleNotAllowed, "CA certificates are not renewed online")
	}
	csr, err := parseCSR(csrDER)
	if err != nil {
		return nil, err
	}
	if pubEqual(csr.PublicKey, current.PublicKey) {
		return nil, fail(ReasonKeyNotAllowed, "renewal needs a new key")
	}
	if validity == 0 {
		validity = DefaultEndEntityValidity
	}
	p := profile{pub: csr.PublicKey, role: rec.Role, purpose: rec.Purpose,
		subject: a.subject(pki.EntityCN(rec.Role, rec.SubjectID)), subjectID: rec.SubjectID, validity: validity}
	if rec.Role == pki.RoleCardholder {
		p.notAfter = current.NotAfter
	}
	cert, err := a.sign(ctx, p)
	if err != nil {
		return nil, err
	}
	if err := a.Revoke(ctx, current.SerialNumber, RevokeSuperseded); err != nil {
		return nil, fmt.Errorf("ca: renew: revoke superseded: %w", err)
	}
	return cert, nil
}
