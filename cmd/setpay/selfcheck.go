package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/setpay/setpay/pki"
)

// A gateway or merchant checks its own SET identity before it serves: a service that
// would fail every purchase (a leaf-only certificate file, a certificate of the wrong
// role, expired or revoked, or one whose key is not the token's) refuses to start and
// says which field is wrong and why.

// expiryWarning is how close to its end a certificate makes the service warn at start.
const expiryWarning = 14 * 24 * time.Hour

// ownCert is one of the service's certificates with the key the token holds for it.
type ownCert struct {
	field    string              // configuration field of the certificate file: sign_cert, kx_cert
	keyField string              // configuration field of the key: sign_key, kx_key
	chain    []*x509.Certificate // the file's certificates, leaf first
	key      crypto.PublicKey    // public half of the token key
	purpose  pki.Purpose
}

// checkOwnIdentity checks each certificate: the file holds the chain (leaf, issuing
// CA, brand), the leaf carries the role want (the gateway's or the merchant's; with
// RoleUnknown, either, the same for every certificate), it chains to v's root through
// its own chain and the configured CAs, it is valid at now and not revoked on the
// loaded CRLs, and its key is the token's. It warns (on logger) when a certificate of
// a chain ends within expiryWarning. The error names the field and the reason.
func checkOwnIdentity(ctx context.Context, logger *slog.Logger, want pki.Role, v *pki.Verifier, cas []*x509.Certificate, certs []ownCert, now time.Time) error {
	for _, c := range certs {
		role, err := checkOwnCert(ctx, want, v, cas, c, now)
		if err != nil {
			return fmt.Errorf("%s: %w", c.field, err)
		}
		if want == pki.RoleUnknown {
			want = role // the key-exchange certificate must be of the same party
		}
		for _, ch := range c.chain {
			if left := ch.NotAfter.Sub(now); left < expiryWarning {
				logger.Warn("certificate expires soon: renew it", "field", c.field, "subject", ch.Subject.CommonName,
					"serial", ch.SerialNumber.Text(16), "not_after", ch.NotAfter.UTC().Format(time.RFC3339), "left", left.Round(time.Minute).String())
			}
		}
	}
	return nil
}

func checkOwnCert(ctx context.Context, want pki.Role, v *pki.Verifier, cas []*x509.Certificate, c ownCert, now time.Time) (pki.Role, error) {
	if len(c.chain) == 0 {
		return 0, errors.New("no certificate")
	}
	leaf := c.chain[0]
	if len(c.chain) < 2 {
		return 0, errors.New("holds only the leaf certificate: it must hold the chain, leaf then issuing CA then brand CA " +
			"(as `setpay gateway register` / `setpay merchant register` write it), or peers cannot verify this service")
	}
	if err := leaf.CheckSignatureFrom(c.chain[1]); err != nil {
		return 0, fmt.Errorf("the second certificate (%q) is not the issuer of the first (%q): the chain must be leaf, issuing CA, brand CA",
			c.chain[1].Subject.CommonName, leaf.Subject.CommonName)
	}
	role, err := pki.RoleOf(leaf)
	if err != nil {
		return 0, fmt.Errorf("wrong role: %w", err)
	}
	switch {
	case want != pki.RoleUnknown && role != want:
		return 0, fmt.Errorf("wrong role: the certificate (%q) is a %s's, this service is the %s", leaf.Subject.CommonName, role, want)
	case want == pki.RoleUnknown && role != pki.RoleGateway && role != pki.RoleMerchant:
		return 0, fmt.Errorf("wrong role: the certificate (%q) is a %s's, want a gateway's or a merchant's", leaf.Subject.CommonName, role)
	}
	inter := append([]*x509.Certificate(nil), c.chain[1:]...)
	for _, ca := range cas {
		if !slices.ContainsFunc(inter, ca.Equal) {
			inter = append(inter, ca)
		}
	}
	if _, err := v.Verify(ctx, leaf, inter, pki.Expect{Role: role, Purpose: c.purpose}, now); err != nil {
		return 0, fmt.Errorf("%s: %w", ownCertReason(err), err)
	}
	if k, ok := c.key.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(leaf.PublicKey) {
		return 0, fmt.Errorf("key mismatch: the certificate (%q, serial %s) is not for the key %s names", leaf.Subject.CommonName,
			leaf.SerialNumber.Text(16), c.keyField)
	}
	return role, nil
}

// ownCertReason words a verification failure for the operator.
func ownCertReason(err error) string {
	switch pki.ReasonOf(err) {
	case pki.ReasonExpired:
		return "expired (renew it with the CA)"
	case pki.ReasonNotYetValid:
		return "not yet valid (check the clock)"
	case pki.ReasonRevoked:
		return "revoked (register again for new certificates)"
	case pki.ReasonUntrustedRoot:
		return "does not chain to the configured root through ca_chain"
	case pki.ReasonCRLUnavailable:
		return "no current CRL of its issuer in crls"
	case pki.ReasonWrongRole:
		return "wrong role"
	case pki.ReasonWrongKeyUsage:
		return "wrong key usage for this field"
	}
	return "not valid"
}
