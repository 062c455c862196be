package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"
)

// CRLSource yields the current CRL of an issuing certificate. Implementations
// may fetch over the network; the Verifier checks signature and freshness
// itself, so a source need not be trusted.
type CRLSource interface {
	CRL(ctx context.Context, issuer *x509.Certificate) (*x509.RevocationList, error)
}

// ErrNoCRL is returned by MemoryCRLs when it holds no CRL for an issuer.
var ErrNoCRL = errors.New("pki: no CRL for issuer")

// MemoryCRLs is an in-memory CRLSource keyed by issuer name and key id. Put
// keeps only the CRL with the highest CRL number per issuer.
type MemoryCRLs struct {
	mu   sync.RWMutex
	crls map[string]*x509.RevocationList
}

// NewMemoryCRLs returns an empty in-memory CRL source.
func NewMemoryCRLs() *MemoryCRLs {
	return &MemoryCRLs{crls: make(map[string]*x509.RevocationList)}
}

func crlKey(rawName, keyID []byte) string {
	return string(rawName) + "\x00" + string(keyID)
}

// Put stores crl unless a CRL with a higher or equal number is already held
// for the same issuer (so an older CRL cannot replace a newer one). Offering the
// very CRL already held (same bytes) is no error: a source read again unchanged is
// the normal case.
func (m *MemoryCRLs) Put(crl *x509.RevocationList) error {
	if crl == nil || crl.Number == nil {
		return fmt.Errorf("pki: CRL without number")
	}
	k := crlKey(crl.RawIssuer, crl.AuthorityKeyId)
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.crls[k]; ok && old.Number.Cmp(crl.Number) >= 0 {
		if bytes.Equal(old.Raw, crl.Raw) {
			return nil
		}
		return fmt.Errorf("pki: CRL number %s not above held %s", crl.Number, old.Number)
	}
	m.crls[k] = crl
	return nil
}

// PutDER parses and stores a DER CRL. The signature is checked on use, by the Verifier.
func (m *MemoryCRLs) PutDER(der []byte) error {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("pki: parse CRL: %w", err)
	}
	return m.Put(crl)
}

// CRL implements CRLSource.
func (m *MemoryCRLs) CRL(_ context.Context, issuer *x509.Certificate) (*x509.RevocationList, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if c, ok := m.crls[crlKey(issuer.RawSubject, issuer.SubjectKeyId)]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("%w %q", ErrNoCRL, issuer.Subject.String())
}

// All returns every held CRL (for export, e.g. to openssl).
func (m *MemoryCRLs) All() []*x509.RevocationList {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*x509.RevocationList, 0, len(m.crls))
	for _, c := range m.crls {
		out = append(out, c)
	}
	return out
}

// CRLClockSkew is how far in the future a CRL's thisUpdate may lie.
const CRLClockSkew = 5 * time.Minute

// checkCRL validates crl as the current CRL of issuer at time at, and reports
// whether cert's serial is listed.
func checkCRL(crl *x509.RevocationList, issuer, cert *x509.Certificate, at time.Time) error {
	if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return newError(ReasonCRLUnavailable, issuer, fmt.Errorf("CRL issued by %q", crl.Issuer.String()))
	}
	if len(crl.AuthorityKeyId) > 0 && len(issuer.SubjectKeyId) > 0 && !bytes.Equal(crl.AuthorityKeyId, issuer.SubjectKeyId) {
		return newError(ReasonCRLUnavailable, issuer, fmt.Errorf("CRL authority key id does not match issuer"))
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return newError(ReasonCRLUnavailable, issuer, fmt.Errorf("CRL signature: %w", err))
	}
	// A CRL from a CA whose clock runs slightly ahead is still the newest
	// statement about revocation; refusing it would only hide revocations.
	if at.Add(CRLClockSkew).Before(crl.ThisUpdate) {
		return newError(ReasonCRLUnavailable, issuer, fmt.Errorf("CRL thisUpdate %s is after %s", crl.ThisUpdate.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339)))
	}
	if crl.NextUpdate.IsZero() || !at.Before(crl.NextUpdate) {
		return newError(ReasonCRLUnavailable, issuer, fmt.Errorf("CRL expired at %s", crl.NextUpdate.UTC().Format(time.RFC3339)))
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			return newError(ReasonRevoked, cert, fmt.Errorf("serial %x revoked at %s (reason %d)", cert.SerialNumber, e.RevocationTime.UTC().Format(time.RFC3339), e.ReasonCode))
		}
	}
	return nil
}
