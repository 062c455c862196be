package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// RFC 5280 CRL reason codes.
const (
	RevokeUnspecified          = 0
	RevokeKeyCompromise        = 1
	RevokeCACompromise         = 2
	RevokeAffiliationChanged   = 3
	RevokeSuperseded           = 4
	RevokeCessationOfOperation = 5
	RevokeCertificateHold      = 6
	RevokePrivilegeWithdrawn   = 9
	RevokeAACompromise         = 10
)

// Revoke marks a certificate this CA issued as revoked. It appears on every
// CRL produced afterwards. Reason 7 is unused in RFC 5280 and refused;
// certificateHold is refused too, because revocation here is final.
func (a *Authority) Revoke(ctx context.Context, serial *big.Int, reason int) error {
	if serial == nil || serial.Sign() <= 0 {
		return fail(ReasonBadRequest, "serial must be positive")
	}
	if reason < 0 || reason > 10 || reason == 7 || reason == RevokeCertificateHold {
		return fail(ReasonBadRequest, "revocation reason %d not allowed", reason)
	}
	// Second precision: that is what a CRL can carry, and it keeps the
	// record equal to the published revocation time.
	now := a.now().UTC().Truncate(time.Second)
	err := a.store.Revoke(ctx, serial, reason, now)
	switch {
	case errors.Is(err, ErrNotFound):
		return fail(ReasonUnknownSerial, "serial %x was not issued by this %s", serial, a.role)
	case errors.Is(err, ErrAlreadyRevoked):
		return fail(ReasonAlreadyRevoked, "serial %x", serial)
	case err != nil:
		return fmt.Errorf("ca: revoke: %w", err)
	}
	a.log.InfoContext(ctx, "certificate revoked", "serial", serial.Text(16), "reason", reason)
	return nil
}

// CRL signs a fresh CRL with the next CRL number, thisUpdate now and
// nextUpdate after the configured validity (capped by the CA's own expiry).
func (a *Authority) CRL(ctx context.Context) (*x509.RevocationList, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ca: CRL: %w", err)
	}
	entries, err := a.store.Revocations(ctx)
	if err != nil {
		return nil, fmt.Errorf("ca: CRL entries: %w", err)
	}
	num, err := a.store.NextCRLNumber(ctx)
	if err != nil {
		return nil, fmt.Errorf("ca: CRL number: %w", err)
	}
	this := a.now().UTC().Truncate(time.Second)
	next := this.Add(a.crlTTL)
	if next.After(a.cert.NotAfter) {
		next = a.cert.NotAfter
	}
	if !next.After(this) {
		return nil, fail(ReasonIssuerExpired, "CA certificate expired, cannot publish a CRL")
	}
	tmpl := &x509.RevocationList{
		RevokedCertificateEntries: entries,
		Number:                    num,
		ThisUpdate:                this,
		NextUpdate:                next,
	}
	der, err := x509.CreateRevocationList(a.randSrc, tmpl, a.cert, withContext(ctx, a.signer))
	if err != nil {
		return nil, fmt.Errorf("ca: sign CRL: %w", err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse CRL: %w", err)
	}
	if err := crl.CheckSignatureFrom(a.cert); err != nil {
		return nil, fmt.Errorf("ca: CRL does not verify: %w", err)
	}
	a.log.InfoContext(ctx, "CRL issued", "number", num.String(), "entries", len(entries), "next_update", next)
	return crl, nil
}
