package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Expect is what the caller requires of a leaf certificate.
type Expect struct {
	Role    Role
	Purpose Purpose // required for end-entity roles, must be PurposeNone for CA roles
}

// Verifier is the one certificate verifier used by wallet, merchant, gateway
// and CA. It trusts exactly one root and checks, for every link: signature,
// validity at the given time, role policies (leaf role as expected and each
// issuer holding the only role allowed to issue it), CA constraints and path
// length, key usage against purpose, allowed key types, and revocation through
// a CRL signed by the issuer that is current at the given time.
type Verifier struct {
	root  *x509.Certificate
	crls  CRLSource
	cache chainCache
}

// NewVerifier returns a verifier anchored at root, which must be a
// self-signed CA certificate with the root role. crls is required: there is
// no way to switch revocation checking off.
func NewVerifier(root *x509.Certificate, crls CRLSource) (*Verifier, error) {
	if root == nil || crls == nil {
		return nil, fmt.Errorf("pki: NewVerifier needs a root certificate and a CRL source")
	}
	if r, err := RoleOf(root); err != nil || r != RoleRoot {
		return nil, newError(ReasonWrongRole, root, fmt.Errorf("trust anchor is not a SET root (role %s, %v)", r, err))
	}
	if !root.IsCA || !bytes.Equal(root.RawIssuer, root.RawSubject) {
		return nil, newError(ReasonUntrustedRoot, root, fmt.Errorf("trust anchor is not a self-issued CA"))
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, newError(ReasonBadSignature, root, fmt.Errorf("root self-signature: %w", err))
	}
	return &Verifier{root: root, crls: crls}, nil
}

// Root returns the trust anchor.
func (v *Verifier) Root() *x509.Certificate { return v.root }

// Verify checks leaf against want at time at, building the chain from
// intermediates (which may be unordered, and may include the root). It returns
// the chain leaf first, root last. Errors are *Error with a Reason.
func (v *Verifier) Verify(ctx context.Context, leaf *x509.Certificate, intermediates []*x509.Certificate, want Expect, at time.Time) ([]*x509.Certificate, error) {
	if leaf == nil {
		return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("no leaf certificate")}
	}
	if len(intermediates) > MaxChainLength {
		return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("%d intermediates exceed limit %d", len(intermediates), MaxChainLength)}
	}
	if want.Role.IsCA() != (want.Purpose == PurposeNone) {
		return nil, fmt.Errorf("pki: invalid expectation role %s purpose %s", want.Role, want.Purpose)
	}
	if !want.Role.IsCA() && !want.Role.AllowsPurpose(want.Purpose) {
		return nil, fmt.Errorf("pki: role %s cannot hold a %s key", want.Role, want.Purpose)
	}

	key := chainKey(leaf, intermediates, want)
	if chain := v.cache.lookup(ctx, v.crls, key, at); chain != nil {
		return chain, nil
	}
	chain, err := v.buildChain(leaf, intermediates)
	if err != nil {
		return nil, err
	}
	// Validity first: an expired chain is reported as expired, whatever else.
	for _, c := range chain {
		if at.Before(c.NotBefore) {
			return nil, newError(ReasonNotYetValid, c, fmt.Errorf("valid from %s, checked at %s", c.NotBefore.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339)))
		}
		if at.After(c.NotAfter) {
			return nil, newError(ReasonExpired, c, fmt.Errorf("expired %s, checked at %s", c.NotAfter.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339)))
		}
	}
	if err := checkRoles(chain, want); err != nil {
		return nil, err
	}
	if err := checkLeafKey(leaf, want); err != nil {
		return nil, err
	}
	used := make([]*x509.RevocationList, 0, len(chain)-1)
	for i := 0; i < len(chain)-1; i++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("pki: verify: %w", err)
		}
		crl, err := v.crls.CRL(ctx, chain[i+1])
		if err != nil {
			return nil, newError(ReasonCRLUnavailable, chain[i+1], err)
		}
		if err := checkCRL(crl, chain[i+1], chain[i], at); err != nil {
			return nil, err
		}
		used = append(used, crl)
	}
	// Defence in depth: the standard library must agree with the checks above
	// (name constraints, its own path-length and CA logic). Our own checks run
	// first so that failures carry a precise Reason.
	roots := x509.NewCertPool()
	roots.AddCert(v.root)
	pool := x509.NewCertPool()
	for _, c := range chain[1:] {
		if !c.Equal(v.root) {
			pool.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, newError(ReasonUnknown, leaf, fmt.Errorf("x509 verification: %w", err))
	}
	v.cache.store(key, chain, used)
	return chain, nil
}

// buildChain walks issuer links from leaf to the configured root, checking
// each signature. SET chains are short and fixed in shape, so a greedy walk
// over the (bounded) candidates suffices.
func (v *Verifier) buildChain(leaf *x509.Certificate, intermediates []*x509.Certificate) ([]*x509.Certificate, error) {
	chain := []*x509.Certificate{leaf}
	cur := leaf
	for {
		if len(cur.UnhandledCriticalExtensions) > 0 {
			return nil, newError(ReasonUnhandledCritical, cur, fmt.Errorf("%d unhandled critical extensions", len(cur.UnhandledCriticalExtensions)))
		}
		if cur.Equal(v.root) {
			return chain, nil
		}
		if len(chain) > MaxChainLength {
			return nil, newError(ReasonPathLength, leaf, fmt.Errorf("chain longer than %d", MaxChainLength))
		}
		candidates := []*x509.Certificate{v.root}
		candidates = append(candidates, intermediates...)
		var next *x509.Certificate
		var sigErr error
		for _, c := range candidates {
			if c == nil || c.Equal(cur) || !bytes.Equal(c.RawSubject, cur.RawIssuer) {
				continue
			}
			if len(cur.AuthorityKeyId) > 0 && len(c.SubjectKeyId) > 0 && !bytes.Equal(cur.AuthorityKeyId, c.SubjectKeyId) {
				continue
			}
			if err := cur.CheckSignatureFrom(c); err != nil {
				sigErr = err
				continue
			}
			next = c
			break
		}
		if next == nil {
			if sigErr != nil {
				var ce x509.ConstraintViolationError
				if errors.As(sigErr, &ce) {
					return nil, newError(ReasonWrongKeyUsage, cur, fmt.Errorf("issuer may not sign certificates: %w", sigErr))
				}
				return nil, newError(ReasonBadSignature, cur, sigErr)
			}
			return nil, newError(ReasonUntrustedRoot, cur, fmt.Errorf("no issuer %q leading to the configured root", cur.Issuer.String()))
		}
		// Path length: next has len(chain)-1 CA certificates below it.
		below := len(chain) - 1
		// Parsed certificates carry MaxPathLen -1 when no limit is encoded.
		if next.MaxPathLen >= 0 && below > next.MaxPathLen {
			return nil, newError(ReasonPathLength, next, fmt.Errorf("MaxPathLen %d, %d CA certificates below", next.MaxPathLen, below))
		}
		chain = append(chain, next)
		cur = next
	}
}

// checkRoles requires the leaf role to be want.Role and every certificate to be
// issued by a CA holding exactly the role allowed to issue it.
func checkRoles(chain []*x509.Certificate, want Expect) error {
	roles := make([]Role, len(chain))
	for i, c := range chain {
		r, err := RoleOf(c)
		if err != nil {
			return err
		}
		roles[i] = r
	}
	if roles[0] != want.Role {
		return newError(ReasonWrongRole, chain[0], fmt.Errorf("certificate role %s, want %s", roles[0], want.Role))
	}
	for i := 0; i < len(chain)-1; i++ {
		if roles[i+1] != roles[i].Issuer() {
			return newError(ReasonWrongRole, chain[i], fmt.Errorf("%s certificate issued by a %s, only a %s may issue it", roles[i], roles[i+1], roles[i].Issuer()))
		}
		if i > 0 && (!chain[i].IsCA || !chain[i].BasicConstraintsValid) {
			return newError(ReasonWrongRole, chain[i], fmt.Errorf("%s certificate is not a CA", roles[i]))
		}
	}
	if roles[len(roles)-1] != RoleRoot {
		return newError(ReasonWrongRole, chain[len(chain)-1], fmt.Errorf("chain ends at %s", roles[len(roles)-1]))
	}
	return nil
}

// checkLeafKey checks key type, CA flag, KeyUsage and the purpose policy.
func checkLeafKey(leaf *x509.Certificate, want Expect) error {
	if _, err := CheckPublicKey(leaf.PublicKey); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Subject = leaf.Subject.String()
		}
		return err
	}
	if want.Role.IsCA() {
		if !leaf.IsCA || leaf.KeyUsage&x509.KeyUsageCertSign == 0 {
			return newError(ReasonWrongKeyUsage, leaf, fmt.Errorf("CA certificate without certSign"))
		}
		return nil
	}
	if leaf.IsCA {
		return newError(ReasonWrongRole, leaf, fmt.Errorf("end-entity certificate marked as CA"))
	}
	ku, err := KeyUsageFor(want.Purpose, leaf.PublicKey)
	if err != nil {
		return err
	}
	if leaf.KeyUsage != ku {
		return newError(ReasonWrongKeyUsage, leaf, fmt.Errorf("key usage %#x, %s key needs exactly %#x", leaf.KeyUsage, want.Purpose, ku))
	}
	p, err := PurposeOf(leaf)
	if err != nil {
		return err
	}
	if p != want.Purpose {
		return newError(ReasonWrongKeyUsage, leaf, fmt.Errorf("purpose policy %s, want %s", p, want.Purpose))
	}
	return nil
}
