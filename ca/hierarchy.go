package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/setpay/setpay/pki"
)

// KeyGenerator creates a CA key inside a token and returns it as a
// crypto.Signer. alg is one of the pki.Alg* names. The lead adapts hsm.Token.
type KeyGenerator interface {
	GenerateKey(ctx context.Context, label string, alg string) (crypto.Signer, error)
}

// HierarchyConfig configures BuildHierarchy.
type HierarchyConfig struct {
	RootKeys  KeyGenerator // token holding the root key (may be the same as Keys)
	Keys      KeyGenerator // token for the brand and issuing CA keys
	Algorithm string       // pki.Alg*; "" means pki.AlgECDSAP256
	Org       string       // subject O of every certificate, e.g. "SETPay"
	Brand     string       // brand name in CA common names, e.g. "SETPay"
	// LabelPrefix prefixes the token key labels ("setpay-" by default):
	// <prefix>root-ca, brand-ca, cca, mca, pca.
	LabelPrefix string
	// Validity per level; 0 selects 20, 10 and 5 years.
	RootValidity, BrandValidity, IssuingValidity time.Duration
	// NewStore returns the store of each CA; nil gives each a MemStore.
	NewStore func(role pki.Role) Store
	Clock    func() time.Time
	Logger   *slog.Logger
	// CRLValidity is every CA's CRL validity; CRLValidityFor overrides it per CA.
	// Neither set: DefaultCRLValidityFor.
	CRLValidity    time.Duration
	CRLValidityFor CRLValidities
	EnrollmentTTL  time.Duration
}

// CRLValidities is the CRL validity per CA role (a missing role: the default).
type CRLValidities map[pki.Role]time.Duration

// of returns the validity configured for r, else def.
func (v CRLValidities) of(r pki.Role, def time.Duration) time.Duration {
	if d, ok := v[r]; ok && d > 0 {
		return d
	}
	return def
}

// Check refuses a validity that is not positive or names a role that is not a CA.
func (v CRLValidities) Check() error {
	var errs []error
	for r, d := range v {
		if !r.IsCA() {
			errs = append(errs, fmt.Errorf("ca: CRL validity for %s, which is not a CA", r))
		} else if d <= 0 {
			errs = append(errs, fmt.Errorf("ca: %s CRL validity %s is not positive", r, d))
		}
	}
	return errors.Join(errs...)
}

// Hierarchy is the full SET CA tree.
type Hierarchy struct {
	Root, Brand, CCA, MCA, PCA *Authority
}

// Authorities returns all five CAs, root first.
func (h *Hierarchy) Authorities() []*Authority {
	return []*Authority{h.Root, h.Brand, h.CCA, h.MCA, h.PCA}
}

// Issuing returns the issuing CA for an end-entity role (nil for others).
func (h *Hierarchy) Issuing(r pki.Role) *Authority {
	switch r {
	case pki.RoleCardholder:
		return h.CCA
	case pki.RoleMerchant:
		return h.MCA
	case pki.RoleGateway:
		return h.PCA
	}
	return nil
}

const year = 365 * 24 * time.Hour

// BuildHierarchy generates every CA key in its token and creates
// root -> brand -> CCA/MCA/PCA with role policies and path lengths 2, 1, 0.
// Each subordinate proves possession of its key by signing a CSR with it.
func BuildHierarchy(ctx context.Context, cfg HierarchyConfig) (*Hierarchy, error) {
	if cfg.RootKeys == nil || cfg.Keys == nil {
		return nil, fmt.Errorf("ca: hierarchy needs RootKeys and Keys")
	}
	if cfg.Algorithm == "" {
		cfg.Algorithm = pki.AlgECDSAP256
	}
	if cfg.LabelPrefix == "" {
		cfg.LabelPrefix = "setpay-"
	}
	if cfg.Brand == "" {
		cfg.Brand = "SETPay"
	}
	if cfg.RootValidity == 0 {
		cfg.RootValidity = 20 * year
	}
	if cfg.BrandValidity == 0 {
		cfg.BrandValidity = 10 * year
	}
	if cfg.IssuingValidity == 0 {
		cfg.IssuingValidity = 5 * year
	}
	newStore := cfg.NewStore
	if newStore == nil {
		newStore = NewMemStores()
	}
	base := Config{Clock: cfg.Clock, Logger: cfg.Logger, CRLValidity: cfg.CRLValidity, EnrollmentTTL: cfg.EnrollmentTTL, Organization: cfg.Org}

	rootKey, err := cfg.RootKeys.GenerateKey(ctx, cfg.LabelPrefix+"root-ca", cfg.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	if err := cfg.CRLValidityFor.Check(); err != nil {
		return nil, err
	}
	rootCfg := base
	rootCfg.CRLValidity = cfg.CRLValidityFor.of(pki.RoleRoot, cfg.CRLValidity)
	rootCfg.Signer, rootCfg.Store = rootKey, newStore(pki.RoleRoot)
	root, err := NewRoot(ctx, cfg.Brand+" Root CA", cfg.RootValidity, rootCfg)
	if err != nil {
		return nil, err
	}
	h := &Hierarchy{Root: root}
	h.Brand, err = subordinate(ctx, root, cfg.Keys, pki.RoleBrand, cfg.LabelPrefix+"brand-ca", cfg.Brand+" Brand CA", cfg.BrandValidity, cfg.Algorithm, base, cfg.CRLValidityFor, newStore)
	if err != nil {
		return nil, err
	}
	for _, s := range []struct {
		role  pki.Role
		label string
		cn    string
		dst   **Authority
	}{
		{pki.RoleCCA, "cca", " Cardholder CA", &h.CCA},
		{pki.RoleMCA, "mca", " Merchant CA", &h.MCA},
		{pki.RolePCA, "pca", " Payment Gateway CA", &h.PCA},
	} {
		*s.dst, err = subordinate(ctx, h.Brand, cfg.Keys, s.role, cfg.LabelPrefix+s.label, cfg.Brand+s.cn, cfg.IssuingValidity, cfg.Algorithm, base, cfg.CRLValidityFor, newStore)
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

func subordinate(ctx context.Context, parent *Authority, keys KeyGenerator, role pki.Role, label, cn string, validity time.Duration, alg string, base Config, crlFor CRLValidities, newStore func(pki.Role) Store) (*Authority, error) {
	key, err := keys.GenerateKey(ctx, label, alg)
	if err != nil {
		return nil, fmt.Errorf("ca: generate %s key: %w", role, err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		return nil, fmt.Errorf("ca: %s CSR: %w", role, err)
	}
	cert, err := parent.IssueSubordinateCA(ctx, CARequest{Role: role, CommonName: cn, CSR: csr, Validity: validity})
	if err != nil {
		return nil, fmt.Errorf("ca: issue %s certificate: %w", role, err)
	}
	c := base
	c.CRLValidity = crlFor.of(role, base.CRLValidity)
	c.Signer, c.Certificate, c.Chain, c.Store = key, cert, parent.Chain(), newStore(role)
	a, err := NewAuthority(c)
	if err != nil {
		return nil, fmt.Errorf("ca: %s authority: %w", role, err)
	}
	return a, nil
}

// NewRoot self-signs a root certificate (role root, MaxPathLen 2) for
// cfg.Signer and returns the root Authority. cfg.Certificate and cfg.Chain
// must be empty.
func NewRoot(ctx context.Context, commonName string, validity time.Duration, cfg Config) (*Authority, error) {
	if cfg.Signer == nil || cfg.Certificate != nil || len(cfg.Chain) > 0 {
		return nil, fmt.Errorf("ca: NewRoot needs a Signer and no certificate or chain")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ca: root: %w", err)
	}
	pub := cfg.Signer.Public()
	if _, err := pki.CheckPublicKey(pub); err != nil {
		return nil, &Error{Reason: ReasonKeyNotAllowed, Err: err}
	}
	if validity <= 0 {
		return nil, fail(ReasonBadRequest, "root validity must be positive")
	}
	now := time.Now
	if cfg.Clock != nil {
		now = cfg.Clock
	}
	t := now()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	serial := new(big.Int).SetBytes(b)
	serial.SetBit(serial, 127, 1) // never zero
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	subj := pkix.Name{CommonName: commonName}
	if cfg.Organization != "" {
		subj.Organization = []string{cfg.Organization}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subj,
		NotBefore: t.Add(-clockSkew), NotAfter: t.Add(validity),
		SubjectKeyId: ski, AuthorityKeyId: ski,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: pki.RoleRoot.MaxPathLen(),
		KeyUsage: pki.CAKeyUsage,
		Policies: pki.Policies(pki.RoleRoot, pki.PurposeNone),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, cfg.Signer)
	if err != nil {
		return nil, fmt.Errorf("ca: self-sign root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse root: %w", err)
	}
	cfg.Certificate = cert
	a, err := NewAuthority(cfg)
	if err != nil {
		return nil, err
	}
	if err := a.store.PutIssued(ctx, IssuedCert{Serial: serial, DER: der, Role: pki.RoleRoot, SubjectID: commonName, IssuedAt: t, NotAfter: cert.NotAfter}); err != nil {
		return nil, fmt.Errorf("ca: record root: %w", err)
	}
	a.log.InfoContext(ctx, "root certificate created", "serial", serial.Text(16), "subject", cert.Subject.String())
	return a, nil
}
