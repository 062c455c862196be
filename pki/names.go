package pki

import (
	"crypto/x509"
	"fmt"
	"strings"
)

// MaxEntityIDLength bounds merchant and gateway identifiers.
const MaxEntityIDLength = 64

// ValidateEntityID checks a merchant or gateway identifier: 1..64 characters
// of [A-Za-z0-9._-], so it can sit in a subject CN and a log line unescaped.
func ValidateEntityID(id string) error {
	if id == "" || len(id) > MaxEntityIDLength {
		return fmt.Errorf("pki: entity id must be 1..%d characters, got %d", MaxEntityIDLength, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("pki: entity id has a character outside [A-Za-z0-9._-] at %d", i)
		}
	}
	return nil
}

// EntityCN is the subject common name of an end-entity certificate:
// "<role>:<id>", e.g. "merchant:shop-42", "cardholder:<CardholderID>".
func EntityCN(r Role, id string) string { return r.String() + ":" + id }

// EntityID returns the identifier in cert's subject CN, checking that the CN
// prefix names the certificate's role policy (they must not disagree).
func EntityID(cert *x509.Certificate) (Role, string, error) {
	r, err := RoleOf(cert)
	if err != nil {
		return RoleUnknown, "", err
	}
	if r.IsCA() {
		return r, "", newError(ReasonWrongRole, cert, fmt.Errorf("%s is a CA, not an end entity", r))
	}
	id, ok := strings.CutPrefix(cert.Subject.CommonName, r.String()+":")
	if !ok || id == "" {
		return r, "", newError(ReasonWrongRole, cert, fmt.Errorf("subject CN does not match role %s", r))
	}
	return r, id, nil
}
