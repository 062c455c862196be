package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
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

// Error is the error type of this package.
type Error struct {
	Reason  Reason
	Subject string // subject of the certificate concerned, if any (never card data)
	Err     error  // underlying cause, may be nil
}

func (e *Error) Error() string {
	s := "pki: " + e.Reason.String()
	if e.Subject != "" {
		s += fmt.Sprintf(" (%s)", e.Subject)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches a Reason target, or an *Error target with the same Reason.
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case Reason:
		return t == e.Reason
	case *Error:
		return t.Reason == e.Reason && t.Err == nil
	}
	return false
}

// ReasonOf returns the Reason carried by err, ReasonUnknown if none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	var r Reason
	if errors.As(err, &r) {
		return r
	}
	return ReasonUnknown
}

func newError(r Reason, cert *x509.Certificate, err error) *Error {
	e := &Error{Reason: r, Err: err}
	if cert != nil {
		e.Subject = cert.Subject.String()
	}
	return e
}
