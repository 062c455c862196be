package pki

import (
	"crypto/x509"
	"fmt"
)

// Arc is the project OID arc (X.667 UUID arc, needs no registration).
const Arc = "2.25.297611510319390661672115465532967488107"

// Sub-arcs of Arc.
const (
	ArcPolicies     = Arc + ".1" // certificate roles and key purposes
	ArcContentTypes = Arc + ".2" // CMS content types of protocol messages
	ArcExtensions   = Arc + ".3" // certificate extensions
)

// mustOID parses a constant OID; only called with literals defined in this file.
func mustOID(s string) x509.OID {
	o, err := x509.ParseOID(s)
	if err != nil {
		panic(fmt.Sprintf("pki: bad constant OID %q: %v", s, err))
	}
	return o
}

// Role is the SET role of a certificate, carried as a certificate policy OID
// ArcPolicies.<n>. Exactly one role policy is present in every certificate.
type Role int

// Roles. The numeric value is the last arc of the policy OID.
const (
	RoleUnknown    Role = 0
	RoleRoot       Role = 1
	RoleBrand      Role = 2
	RoleCCA        Role = 3 // cardholder CA
	RoleMCA        Role = 4 // merchant CA
	RolePCA        Role = 5 // payment-gateway CA
	RoleCardholder Role = 6
	RoleMerchant   Role = 7
	RoleGateway    Role = 8
)

var roleNames = map[Role]string{
	RoleRoot: "root", RoleBrand: "brand", RoleCCA: "cca", RoleMCA: "mca", RolePCA: "pca",
	RoleCardholder: "cardholder", RoleMerchant: "merchant", RoleGateway: "gateway",
}

// Roles lists every defined role, CA roles first.
func Roles() []Role {
	return []Role{RoleRoot, RoleBrand, RoleCCA, RoleMCA, RolePCA, RoleCardholder, RoleMerchant, RoleGateway}
}

func (r Role) String() string {
	if n, ok := roleNames[r]; ok {
		return n
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// Valid reports whether r is a defined role.
func (r Role) Valid() bool { _, ok := roleNames[r]; return ok }

// ParseRole maps a role name ("merchant", "pca", ...) to its Role.
func ParseRole(s string) (Role, error) {
	for r, n := range roleNames {
		if n == s {
			return r, nil
		}
	}
	return RoleUnknown, fmt.Errorf("pki: unknown role %q", s)
}

// OID returns the certificate policy OID of the role.
func (r Role) OID() x509.OID { return mustOID(fmt.Sprintf("%s.%d", ArcPolicies, int(r))) }

// IsCA reports whether the role is a certificate authority.
func (r Role) IsCA() bool {
	switch r {
	case RoleRoot, RoleBrand, RoleCCA, RoleMCA, RolePCA:
		return true
	}
	return false
}

// Issuer returns the only role allowed to issue certificates of role r
// (RoleUnknown for the self-signed root). This is what stops an MCA from
// vouching for a gateway.
func (r Role) Issuer() Role {
	switch r {
	case RoleBrand:
		return RoleRoot
	case RoleCCA, RoleMCA, RolePCA:
		return RoleBrand
	case RoleCardholder:
		return RoleCCA
	case RoleMerchant:
		return RoleMCA
	case RoleGateway:
		return RolePCA
	}
	return RoleUnknown
}

// MaxPathLen is the BasicConstraints path length a CA of this role carries:
// root 2, brand 1, issuing CAs 0; -1 for end entities.
func (r Role) MaxPathLen() int {
	switch r {
	case RoleRoot:
		return 2
	case RoleBrand:
		return 1
	case RoleCCA, RoleMCA, RolePCA:
		return 0
	}
	return -1
}

// Purposes returns the key purposes an end-entity role may hold: cardholders
// only sign; merchants and gateways also receive encrypted data.
func (r Role) Purposes() []Purpose {
	switch r {
	case RoleCardholder:
		return []Purpose{PurposeSignature}
	case RoleMerchant, RoleGateway:
		return []Purpose{PurposeSignature, PurposeKeyExchange}
	}
	return nil
}

// AllowsPurpose reports whether an end-entity role may hold a key of purpose p.
func (r Role) AllowsPurpose(p Purpose) bool {
	for _, q := range r.Purposes() {
		if q == p {
			return true
		}
	}
	return false
}

// Purpose is what an end-entity key is for. It is explicit: a policy OID
// ArcPolicies.<n> (n = 20 + purpose) AND a matching KeyUsage, and the verifier
// requires both to agree. CA certificates carry no purpose policy.
type Purpose int

// Purposes.
const (
	PurposeNone        Purpose = 0 // CA certificates
	PurposeSignature   Purpose = 1 // KeyUsage digitalSignature only
	PurposeKeyExchange Purpose = 2 // KeyUsage keyEncipherment (RSA) or keyAgreement (EC) only
)

const purposeArcBase = 20

func (p Purpose) String() string {
	switch p {
	case PurposeNone:
		return "none"
	case PurposeSignature:
		return "signature"
	case PurposeKeyExchange:
		return "key-exchange"
	}
	return fmt.Sprintf("purpose(%d)", int(p))
}

// OID returns the certificate policy OID of the purpose.
func (p Purpose) OID() x509.OID {
	return mustOID(fmt.Sprintf("%s.%d", ArcPolicies, purposeArcBase+int(p)))
}

// RoleOf returns the role policy of cert. It fails unless exactly one role
// policy is present.
func RoleOf(cert *x509.Certificate) (Role, error) {
	found := RoleUnknown
	for _, p := range cert.Policies {
		for _, r := range Roles() {
			if p.Equal(r.OID()) {
				if found != RoleUnknown && found != r {
					return RoleUnknown, newError(ReasonWrongRole, cert, fmt.Errorf("several role policies (%s, %s)", found, r))
				}
				found = r
			}
		}
	}
	if found == RoleUnknown {
		return RoleUnknown, newError(ReasonWrongRole, cert, fmt.Errorf("no SET role policy"))
	}
	return found, nil
}

// PurposeOf returns the purpose policy of cert, PurposeNone if there is none.
// It fails if both purposes are present.
func PurposeOf(cert *x509.Certificate) (Purpose, error) {
	found := PurposeNone
	for _, p := range cert.Policies {
		for _, q := range []Purpose{PurposeSignature, PurposeKeyExchange} {
			if p.Equal(q.OID()) {
				if found != PurposeNone && found != q {
					return PurposeNone, newError(ReasonWrongKeyUsage, cert, fmt.Errorf("both purpose policies present"))
				}
				found = q
			}
		}
	}
	return found, nil
}

// Policies returns the certificate policies a certificate of role r and
// purpose p carries (what package ca puts in the Policies field).
func Policies(r Role, p Purpose) []x509.OID {
	out := []x509.OID{r.OID()}
	if p != PurposeNone {
		out = append(out, p.OID())
	}
	return out
}
