package ca

import (
	"fmt"

	"github.com/setpay/setpay/internal/reason"
)

// Reason classifies a CA refusal. A Reason is an error, so
// errors.Is(err, ca.ReasonRoleNotAllowed) works on errors from this package.
type Reason int

// Reasons.
const (
	ReasonUnknown              Reason = iota
	ReasonBadRequest                  // malformed request fields (id, validity, card data)
	ReasonBadCSR                      // CSR not parseable or over the size limit
	ReasonBadProofOfPossession        // CSR signature does not verify with its public key
	ReasonKeyNotAllowed               // key type or size outside the allowed set
	ReasonRoleNotAllowed              // this CA may not issue the requested role/purpose
	ReasonEnrollmentInvalid           // unknown enrollment or wrong secret
	ReasonEnrollmentUsed              // secret already redeemed
	ReasonEnrollmentExpired           // secret past its expiry
	ReasonUnknownSerial               // revocation of a serial this CA did not issue
	ReasonAlreadyRevoked              // serial already revoked
	ReasonIssuerExpired               // the CA's own certificate leaves no validity to grant
	ReasonKeyCertified                // the public key is already certified (by any CA of the store, any role)
)

var reasonNames = map[Reason]string{
	ReasonUnknown: "unknown", ReasonBadRequest: "bad request", ReasonBadCSR: "bad CSR",
	ReasonBadProofOfPossession: "bad proof of possession", ReasonKeyNotAllowed: "key not allowed",
	ReasonRoleNotAllowed: "role not allowed", ReasonEnrollmentInvalid: "enrollment invalid",
	ReasonEnrollmentUsed: "enrollment already used", ReasonEnrollmentExpired: "enrollment expired",
	ReasonUnknownSerial: "unknown serial", ReasonAlreadyRevoked: "already revoked",
	ReasonIssuerExpired: "issuer certificate expired", ReasonKeyCertified: "key already certified",
}

func (r Reason) String() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Error makes Reason usable as an errors.Is target.
func (r Reason) Error() string { return "ca: " + r.String() }

// Error is the error type of this package (the project's one classified-error shape).
type Error = reason.Error[Reason]

// ReasonOf returns the Reason carried by err, ReasonUnknown if none.
func ReasonOf(err error) Reason { return reason.Of(err, ReasonUnknown) }

func fail(r Reason, format string, args ...any) error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}
