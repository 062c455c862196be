package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/setpay/setpay/pki"
)

// Defaults.
const (
	// DefaultCRLValidity is the CRL validity of the issuing CAs (CCA, MCA, PCA),
	// whose keys stay online in `ca serve` and re-sign long before it ends.
	DefaultCRLValidity = 24 * time.Hour
	// DefaultRootCRLValidity and DefaultBrandCRLValidity are long: the root's key is
	// offline (its CRL is signed by hand, `setpay ca crl --issuer root`) and the
	// brand's CRL changes only when an issuing CA is revoked.
	DefaultRootCRLValidity  = 30 * 24 * time.Hour
	DefaultBrandCRLValidity = 7 * 24 * time.Hour
	DefaultEnrollmentTTL    = 7 * 24 * time.Hour
	// Backdating of NotBefore, so peers with slightly slow clocks accept a fresh certificate.
	clockSkew = 5 * time.Minute
	// MaxCSRSize bounds a PKCS#10 request from an untrusted client.
	MaxCSRSize = 16 << 10
)

// Config configures one Authority.
type Config struct {
	Signer      crypto.Signer       // the CA key, in a token
	Certificate *x509.Certificate   // the CA's own certificate; its role policy sets what it may issue
	Chain       []*x509.Certificate // issuers above Certificate up to and including the root; empty for the root
	Store       Store               // nil: a fresh MemStore
	Clock       func() time.Time    // nil: time.Now
	Logger      *slog.Logger        // nil: slog.Default()
	CRLValidity time.Duration       // nextUpdate - thisUpdate; 0: DefaultCRLValidityFor(role)
	// EnrollmentTTL is how long an enrollment secret stays redeemable; 0: DefaultEnrollmentTTL.
	EnrollmentTTL time.Duration
	// Organization is put in the subject O of issued certificates (optional).
	Organization string
}

// Authority is one CA of the SET hierarchy. Safe for concurrent use as long
// as its Store is.
type Authority struct {
	signer  crypto.Signer
	cert    *x509.Certificate
	chain   []*x509.Certificate
	role    pki.Role
	store   Store
	now     func() time.Time
	log     *slog.Logger
	crlTTL  time.Duration
	enrTTL  time.Duration
	org     string
	randSrc io.Reader
	kx      kxTable
}

// NewAuthority checks cfg (CA certificate with a CA role policy, signer
// matching its public key, chain linking it to a root) and returns the CA.
func NewAuthority(cfg Config) (*Authority, error) {
	if cfg.Signer == nil || cfg.Certificate == nil {
		return nil, fmt.Errorf("ca: config needs Signer and Certificate")
	}
	role, err := pki.RoleOf(cfg.Certificate)
	if err != nil {
		return nil, fmt.Errorf("ca: own certificate: %w", err)
	}
	if !role.IsCA() || !cfg.Certificate.IsCA || cfg.Certificate.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("ca: own certificate (role %s) is not a CA certificate", role)
	}
	pub, ok := cfg.Signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cfg.Certificate.PublicKey) {
		return nil, fmt.Errorf("ca: signer public key does not match the %s certificate", role)
	}
	// The chain must link the certificate up to a self-signed root, role by role.
	cur, curRole := cfg.Certificate, role
	for _, up := range cfg.Chain {
		if err := cur.CheckSignatureFrom(up); err != nil {
			return nil, fmt.Errorf("ca: chain link %q -> %q: %w", cur.Subject, up.Subject, err)
		}
		upRole, err := pki.RoleOf(up)
		if err != nil || upRole != curRole.Issuer() {
			return nil, fmt.Errorf("ca: chain: %s certificate issued by %s, want %s", curRole, upRole, curRole.Issuer())
		}
		cur, curRole = up, upRole
	}
	if curRole != pki.RoleRoot {
		return nil, fmt.Errorf("ca: chain ends at %s, not at the root", curRole)
	}
	if err := cur.CheckSignatureFrom(cur); err != nil {
		return nil, fmt.Errorf("ca: chain does not end at a self-signed root: %w", err)
	}
	a := &Authority{
		signer: cfg.Signer, cert: cfg.Certificate, chain: cfg.Chain, role: role,
		store: cfg.Store, now: cfg.Clock, log: cfg.Logger, crlTTL: cfg.CRLValidity,
		enrTTL: cfg.EnrollmentTTL, org: cfg.Organization, randSrc: rand.Reader,
		kx: kxTable{pending: map[[32]byte]pendingKX{}},
	}
	if a.store == nil {
		a.store = NewMemStore()
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.log = a.log.With("ca", role.String())
	if a.crlTTL <= 0 {
		a.crlTTL = DefaultCRLValidityFor(role)
	}
	if a.enrTTL <= 0 {
		a.enrTTL = DefaultEnrollmentTTL
	}
	return a, nil
}

// DefaultCRLValidityFor is the CRL validity of a CA role when none is configured.
func DefaultCRLValidityFor(r pki.Role) time.Duration {
	switch r {
	case pki.RoleRoot:
		return DefaultRootCRLValidity
	case pki.RoleBrand:
		return DefaultBrandCRLValidity
	}
	return DefaultCRLValidity
}

// CRLValidity is nextUpdate - thisUpdate of the CRLs this CA signs.
func (a *Authority) CRLValidity() time.Duration { return a.crlTTL }

// Role returns the CA's role.
func (a *Authority) Role() pki.Role { return a.role }

// Certificate returns the CA's own certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// Chain returns the CA's certificate followed by its issuers up to the root.
func (a *Authority) Chain() []*x509.Certificate {
	return append([]*x509.Certificate{a.cert}, a.chain...)
}

// Store returns the CA's store (for the lead's services, e.g. lookup by serial).
func (a *Authority) Store() Store { return a.store }

// subjectKeyID is RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of
// the subjectPublicKey BIT STRING.
func subjectKeyID(pub any) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	s := cryptobyte.String(spki)
	var inner cryptobyte.String
	var bits []byte
	var alg cryptobyte.String
	if !s.ReadASN1(&inner, cbasn1.SEQUENCE) || !inner.ReadASN1(&alg, cbasn1.SEQUENCE) || !inner.ReadASN1BitStringAsBytes(&bits) {
		return nil, fmt.Errorf("malformed SubjectPublicKeyInfo")
	}
	sum := sha256.Sum256(bits)
	return sum[:20], nil
}

// newSerial returns a positive serial from 128 random bits.
func (a *Authority) newSerial() (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := io.ReadFull(a.randSrc, b); err != nil {
			return nil, fmt.Errorf("ca: serial: %w", err)
		}
		if s := new(big.Int).SetBytes(b); s.Sign() > 0 {
			return s, nil
		}
	}
}

// profile is everything the CA decides about a certificate.
type profile struct {
	pub       any
	role      pki.Role
	purpose   pki.Purpose
	subject   pkix.Name
	subjectID string
	validity  time.Duration
	notAfter  time.Time // optional extra cap (card expiry)
	// caKeyExchange marks the key-exchange certificate of a CA (role cca/mca/pca,
	// purpose key exchange, not a CA certificate): see IssueCAKeyExchange.
	caKeyExchange bool
}

// sign builds and signs a certificate for p; the only path to the CA key.
func (a *Authority) sign(ctx context.Context, p profile) (*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ca: issue: %w", err)
	}
	if p.role.Issuer() != a.role {
		return nil, fail(ReasonRoleNotAllowed, "a %s may not issue %s certificates", a.role, p.role)
	}
	if p.validity <= 0 {
		return nil, fail(ReasonBadRequest, "validity must be positive")
	}
	now := a.now()
	notBefore := now.Add(-clockSkew)
	if notBefore.Before(a.cert.NotBefore) {
		notBefore = a.cert.NotBefore
	}
	notAfter := now.Add(p.validity)
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	if !p.notAfter.IsZero() && notAfter.After(p.notAfter) {
		notAfter = p.notAfter
	}
	if !notAfter.After(now) {
		return nil, fail(ReasonIssuerExpired, "no validity left to grant (issuer until %s)", a.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := a.newSerial()
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(p.pub)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               p.subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		SubjectKeyId:          ski,
		BasicConstraintsValid: true,
		Policies:              pki.Policies(p.role, p.purpose),
	}
	if p.role.IsCA() && !p.caKeyExchange {
		tmpl.IsCA = true
		tmpl.KeyUsage = pki.CAKeyUsage
		tmpl.MaxPathLen = p.role.MaxPathLen()
		tmpl.MaxPathLenZero = tmpl.MaxPathLen == 0
	} else {
		ku, err := pki.KeyUsageFor(p.purpose, p.pub)
		if err != nil {
			return nil, &Error{Reason: ReasonKeyNotAllowed, Err: err}
		}
		tmpl.KeyUsage = ku
	}
	der, err := x509.CreateCertificate(a.randSrc, tmpl, a.cert, p.pub, withContext(ctx, a.signer))
	if err != nil {
		return nil, fmt.Errorf("ca: sign %s certificate: %w", p.role, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse issued certificate: %w", err)
	}
	// A faulty token must not hand out certificates that do not verify.
	if err := cert.CheckSignatureFrom(a.cert); err != nil {
		return nil, fmt.Errorf("ca: issued certificate does not verify: %w", err)
	}
	rec := IssuedCert{Serial: serial, DER: der, Role: p.role, Purpose: p.purpose, SubjectID: p.subjectID, IssuedAt: now, NotAfter: notAfter}
	if err := a.store.PutIssued(ctx, rec); errors.Is(err, ErrKeyCertified) {
		// The certificate just signed is dropped: it was never recorded nor handed out.
		return nil, &Error{Reason: ReasonKeyCertified, Err: fmt.Errorf("%s %s: %w", p.role, p.purpose, err)}
	} else if err != nil {
		return nil, fmt.Errorf("ca: record issued certificate: %w", err)
	}
	a.log.InfoContext(ctx, "certificate issued", "result", "ISSUED", "serial", serial.Text(16), "role", p.role.String(),
		"purpose", p.purpose.String(), "subject", cert.Subject.String(), "not_after", notAfter.UTC())
	return cert, nil
}

// parseCSR validates a PKCS#10 request from an untrusted client: size,
// syntax, proof of possession (its self-signature) and allowed key.
// Everything else in the CSR (subject, requested extensions) is ignored.
func parseCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 || len(der) > MaxCSRSize {
		return nil, fail(ReasonBadCSR, "CSR of %d bytes, want 1..%d", len(der), MaxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, &Error{Reason: ReasonBadCSR, Err: fmt.Errorf("parse CSR: %w", err)}
	}
	if _, err := pki.CheckPublicKey(csr.PublicKey); err != nil {
		return nil, &Error{Reason: ReasonKeyNotAllowed, Err: err}
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, &Error{Reason: ReasonBadProofOfPossession, Err: err}
	}
	return csr, nil
}

func (a *Authority) subject(cn string) pkix.Name {
	n := pkix.Name{CommonName: cn}
	if a.org != "" {
		n.Organization = []string{a.org}
	}
	return n
}

// contextSigner is implemented by token keys (hsm.Key) whose signing can be
// bounded by a context, e.g. while waiting for a free token session.
type contextSigner interface {
	crypto.Signer
	SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

// ctxSigner carries the request's context into crypto.Signer.Sign, which
// crypto/x509 calls without one.
type ctxSigner struct {
	contextSigner
	ctx context.Context
}

func (s ctxSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.SignContext(s.ctx, digest, opts)
}

func withContext(ctx context.Context, s crypto.Signer) crypto.Signer {
	if cs, ok := s.(contextSigner); ok {
		return ctxSigner{contextSigner: cs, ctx: ctx}
	}
	return s
}
