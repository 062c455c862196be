package pki

import (
	"crypto/x509"
	"fmt"

	"github.com/setpay/setpay/internal/reason"
)

// Reason classifies a certificate failure so callers can map it to a SET
// error code. A Reason is itself an error, so errors.Is(err, ReasonRevoked)
// works on any error returned by this package.
type Reason int

// Reasons.
const (
	ReasonUnknown           Reason = iota
	ReasonMalformed                // unparseable or over a size/count limit
	ReasonExpired                  // some certificate's NotAfter is before the check time
	ReasonNotYetValid              // some certificate's NotBefore is after the check time
	ReasonRevoked                  // listed on its issuer's CRL
	ReasonWrongRole                // role policy missing or not the one expected / issuer may not issue it
	ReasonWrongKeyUsage            // KeyUsage or purpose policy does not match the purpose
	ReasonUntrustedRoot            // no chain to the configured root
	ReasonBadSignature             // a signature in the chain or on a CRL does not verify
	ReasonCRLUnavailable           // no usable CRL (missing, expired, not yet valid, bad signature)
	ReasonPathLength               // chain longer than a CA's path length allows
	ReasonUnsupportedKey           // key type or size outside the allowed set
	ReasonUnhandledCritical        // an unknown critical extension
	ReasonPANMismatch              // card data does not match the cardholder certificate
)

var reasonNames = map[Reason]string{
	ReasonUnknown: "unknown", ReasonMalformed: "malformed", ReasonExpired: "expired",
	ReasonNotYetValid: "not yet valid", ReasonRevoked: "revoked", ReasonWrongRole: "wrong role",
	ReasonWrongKeyUsage: "wrong key usage", ReasonUntrustedRoot: "untrusted root",
	ReasonBadSignature: "bad signature", ReasonCRLUnavailable: "CRL unavailable",
	ReasonPathLength: "path length exceeded", ReasonUnsupportedKey: "unsupported key",
	ReasonUnhandledCritical: "unhandled critical extension", ReasonPANMismatch: "PAN mismatch",
}

func (r Reason) String() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Error makes Reason usable as an errors.Is target.
func (r Reason) Error() string { return "pki: " + r.String() }

// Error is the error type of this package (the project's one classified-error shape).
type Error = reason.Error[Reason]

// ReasonOf returns the Reason carried by err, ReasonUnknown if none.
func ReasonOf(err error) Reason { return reason.Of(err, ReasonUnknown) }

func newError(r Reason, cert *x509.Certificate, err error) *Error {
	e := &Error{Reason: r, Err: err}
	if cert != nil {
		e.Subject = cert.Subject.String()
	}
	return e
}
