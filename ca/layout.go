package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/pki"
)

// Token key labels of a CA made by InitDir (hierarchy keys use
// HierarchyConfig's default prefix "setpay-").
const (
	LabelRoot       = "setpay-root-ca"
	LabelBrand      = "setpay-brand-ca"
	LabelCCA        = "setpay-cca"
	LabelMCA        = "setpay-mca"
	LabelPCA        = "setpay-pca"
	LabelCCAKX      = "setpay-cca-kx"
	LabelTLSIssuer  = "setpay-ca-tls-issuer"
	LabelTLS        = "setpay-ca-tls"
	tlsCertValidity = 2 * year
)

// Files of a CA directory (all PEM).
const (
	FileRoot     = "root.pem"
	FileCCAKX    = "cca-kx.pem"
	FileChain    = "chain.pem"  // brand, cca, mca, pca: the -untrusted set for openssl
	FileCRLs     = "crls.pem"   // every CA's CRL
	FileTLSCA    = "tls-ca.pem" // trust anchor of the service's TLS certificate
	FileTLSChain = "tls.pem"    // service TLS certificate and its issuer
)

// TokenKeyGenerator adapts an hsm.Token to KeyGenerator with signing-only keys.
type TokenKeyGenerator struct{ Token *hsm.Token }

// GenerateKey implements KeyGenerator.
func (g TokenKeyGenerator) GenerateKey(ctx context.Context, label, alg string) (crypto.Signer, error) {
	a, err := TokenAlgorithm(alg)
	if err != nil {
		return nil, err
	}
	return g.Token.GenerateKey(ctx, hsm.KeySpec{Label: label, Algorithm: a, Usage: hsm.UsageSign})
}

// TokenAlgorithm maps a certificate key algorithm (pki.Alg*) to the token algorithm
// that generates it; the names are the same, but not every certificate algorithm has
// a token algorithm (RSA-4096 has none), and that is refused here.
func TokenAlgorithm(alg string) (hsm.Algorithm, error) {
	switch alg {
	case pki.AlgECDSAP256:
		return hsm.ECDSAP256, nil
	case pki.AlgECDSAP384:
		return hsm.ECDSAP384, nil
	case pki.AlgRSA2048:
		return hsm.RSA2048, nil
	case pki.AlgRSA3072:
		return hsm.RSA3072, nil
	}
	return "", fmt.Errorf("ca: algorithm %q not supported by the token", alg)
}

// InitConfig configures InitDir.
type InitConfig struct {
	RootToken, Token *hsm.Token // root key token; token of every other CA key and the TLS keys
	Dir              string     // output directory for certificates and CRLs
	NewStore         func(role pki.Role) Store
	Brand, Org       string
	TLSName          string // DNS name or IP of the service's TLS certificate
	CRLValidity      CRLValidities
	Logger           *slog.Logger
}

// InitDir creates the hierarchy in the tokens, the CCA key-exchange key and
// certificate, the service's TLS keys and certificate, and writes every
// certificate and a first CRL per CA to cfg.Dir. It refuses to run twice:
// an existing root certificate or root key means the CA exists.
func InitDir(ctx context.Context, cfg InitConfig) (*Hierarchy, error) {
	if cfg.RootToken == nil || cfg.Token == nil || cfg.Dir == "" || cfg.TLSName == "" {
		return nil, errors.New("ca: init needs both tokens, a directory and a TLS name")
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, FileRoot)); err == nil {
		return nil, fmt.Errorf("ca: already initialised: %s exists", filepath.Join(cfg.Dir, FileRoot))
	}
	for _, c := range []struct {
		t     *hsm.Token
		label string
	}{{cfg.RootToken, LabelRoot}, {cfg.Token, LabelBrand}, {cfg.Token, LabelCCAKX}, {cfg.Token, LabelTLS}} {
		if _, err := c.t.FindKey(ctx, c.label); err == nil {
			return nil, fmt.Errorf("ca: already initialised: key %q exists in token %q (delete it or use other tokens)", c.label, c.t.Label())
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	h, err := BuildHierarchy(ctx, HierarchyConfig{RootKeys: TokenKeyGenerator{cfg.RootToken}, Keys: TokenKeyGenerator{cfg.Token},
		Brand: cfg.Brand, Org: cfg.Org, NewStore: cfg.NewStore, CRLValidityFor: cfg.CRLValidity, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	kxKey, err := cfg.Token.GenerateKey(ctx, hsm.KeySpec{Label: LabelCCAKX, Algorithm: hsm.RSA2048, Usage: hsm.UsageKeyExchange})
	if err != nil {
		return nil, fmt.Errorf("ca: CCA key-exchange key: %w", err)
	}
	kx, err := h.Brand.IssueCAKeyExchange(ctx, h.CCA.Certificate(), kxKey.Public(), 0)
	if err != nil {
		return nil, err
	}
	tlsIssKey, err := cfg.Token.GenerateKey(ctx, hsm.KeySpec{Label: LabelTLSIssuer, Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	if err != nil {
		return nil, fmt.Errorf("ca: TLS issuer key: %w", err)
	}
	tlsKey, err := cfg.Token.GenerateKey(ctx, hsm.KeySpec{Label: LabelTLS, Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	if err != nil {
		return nil, fmt.Errorf("ca: TLS key: %w", err)
	}
	iss, err := tlsrpc.NewTLSIssuer(cfg.Brand+" CA service TLS", tlsIssKey, 20*year)
	if err != nil {
		return nil, fmt.Errorf("ca: TLS issuer: %w", err)
	}
	tlsID, err := iss.IssueServer(cfg.TLSName, tlsKey, tlsCertValidity)
	if err != nil {
		return nil, fmt.Errorf("ca: TLS certificate: %w", err)
	}
	files := map[string][]byte{
		FileRoot:     pki.EncodePEM(h.Root.Certificate()),
		"brand.pem":  pki.EncodePEM(h.Brand.Certificate()),
		FileCCAKX:    pki.EncodePEM(kx),
		FileChain:    pki.EncodePEM(h.Brand.Certificate(), h.CCA.Certificate(), h.MCA.Certificate(), h.PCA.Certificate()),
		FileTLSCA:    pki.EncodePEM(iss.Certificate()),
		FileTLSChain: pki.EncodePEM(append([]*x509.Certificate{tlsID.Cert}, tlsID.Chain...)...),
	}
	for _, a := range []*Authority{h.CCA, h.MCA, h.PCA} {
		files[a.Role().String()+".pem"] = pki.EncodePEM(a.Certificate())
		files[a.Role().String()+"-chain.pem"] = pki.EncodePEM(a.Chain()[:2]...)
	}
	if err := writeFiles(cfg.Dir, files); err != nil {
		return nil, err
	}
	if err := WriteCRLs(ctx, cfg.Dir, h); err != nil {
		return nil, err
	}
	return h, nil
}

// WriteCRLs signs a fresh CRL on every CA present in h and publishes them in dir
// (PublishCRLs): <role>.crl and the bundle crls.pem. The root's CRL is kept from an
// earlier run when h.Root is nil (the root key offline).
func WriteCRLs(ctx context.Context, dir string, h *Hierarchy) error {
	crls := map[pki.Role]*x509.RevocationList{}
	for _, a := range h.Authorities() {
		if a == nil {
			continue
		}
		crl, err := a.CRL(ctx)
		if err != nil {
			return err
		}
		crls[a.Role()] = crl
	}
	_, err := PublishCRLs(dir, crls)
	return err
}

// ReadCRL reads one PEM or DER CRL file.
func ReadCRL(path string) (*x509.RevocationList, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	return crl, nil
}

func writeFiles(dir string, files map[string][]byte) error {
	for name, b := range files {
		if err := writeFileAtomic(filepath.Join(dir, name), b); err != nil {
			return err
		}
	}
	return nil
}

// writeFileAtomic replaces p with b so that a reader sees the old file or the new
// one, never a part: a temporary file of its own in the same directory, synced, then
// renamed over p. Two writers never share a temporary file.
func writeFileAtomic(p string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".*.tmp")
	if err != nil {
		return fmt.Errorf("ca: write %s: %w", p, err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("ca: write %s: %w", p, err)
	}
	return nil
}

// ReadPEMFile reads the certificates of a PEM file, bounded like any
// untrusted input.
func ReadPEMFile(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	certs, err := pki.ParsePEMCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	return certs, nil
}

func readOne(dir, name string) (*x509.Certificate, error) {
	certs, err := ReadPEMFile(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// LoadConfig configures LoadDir.
type LoadConfig struct {
	Dir       string
	RootToken *hsm.Token // nil: the root stays offline (its CRL is read from root.crl)
	Token     *hsm.Token
	NewStore  func(role pki.Role) Store
	Logger    *slog.Logger
	Clock     func() time.Time
	// CRLValidity per CA (ca.yaml's crl_validity); a missing CA: DefaultCRLValidityFor.
	CRLValidity CRLValidities
}

// Loaded is a CA directory brought back to life with its token keys.
type Loaded struct {
	Hierarchy *Hierarchy
	CCASigner crypto.Signer
	CCAKX     *x509.Certificate
	CCAKXKey  crypto.Decrypter
	RootCRL   *x509.RevocationList // when the root is offline
	TLS       tlsrpc.Identity
}

// LoadDir reads the certificates InitDir wrote and finds their keys in the
// tokens (each key must match its certificate).
func LoadDir(ctx context.Context, cfg LoadConfig) (*Loaded, error) {
	if _, err := os.Stat(filepath.Join(cfg.Dir, FileRoot)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("ca: %s is not a CA directory (run `setpay ca init` first)", cfg.Dir)
	}
	newStore := cfg.NewStore
	if newStore == nil {
		newStore = NewMemStores()
	}
	if err := cfg.CRLValidity.Check(); err != nil {
		return nil, err
	}
	base := Config{Logger: cfg.Logger, Clock: cfg.Clock}
	l := &Loaded{Hierarchy: &Hierarchy{}}
	root, err := readOne(cfg.Dir, FileRoot)
	if err != nil {
		return nil, err
	}
	brand, err := readOne(cfg.Dir, "brand.pem")
	if err != nil {
		return nil, err
	}
	load := func(tok *hsm.Token, label string, cert *x509.Certificate, chain []*x509.Certificate, role pki.Role) (*Authority, *hsm.Key, error) {
		key, err := tok.FindKey(ctx, label)
		if err != nil {
			return nil, nil, fmt.Errorf("ca: %s key %q: %w", role, label, err)
		}
		c := base
		c.CRLValidity = cfg.CRLValidity.of(role, 0)
		c.Signer, c.Certificate, c.Chain, c.Store = key, cert, chain, newStore(role)
		a, err := NewAuthority(c)
		if err != nil {
			return nil, nil, err
		}
		return a, key, nil
	}
	if cfg.RootToken != nil {
		if l.Hierarchy.Root, _, err = load(cfg.RootToken, LabelRoot, root, nil, pki.RoleRoot); err != nil {
			return nil, err
		}
	} else if l.RootCRL, err = ReadCRL(filepath.Join(cfg.Dir, "root.crl")); err != nil {
		return nil, err
	}
	if l.Hierarchy.Brand, _, err = load(cfg.Token, LabelBrand, brand, []*x509.Certificate{root}, pki.RoleBrand); err != nil {
		return nil, err
	}
	for _, s := range []struct {
		role  pki.Role
		label string
		dst   **Authority
	}{{pki.RoleCCA, LabelCCA, &l.Hierarchy.CCA}, {pki.RoleMCA, LabelMCA, &l.Hierarchy.MCA}, {pki.RolePCA, LabelPCA, &l.Hierarchy.PCA}} {
		cert, err := readOne(cfg.Dir, s.role.String()+".pem")
		if err != nil {
			return nil, err
		}
		a, key, err := load(cfg.Token, s.label, cert, []*x509.Certificate{brand, root}, s.role)
		if err != nil {
			return nil, err
		}
		*s.dst = a
		if s.role == pki.RoleCCA {
			l.CCASigner = key
		}
	}
	if l.CCAKX, err = readOne(cfg.Dir, FileCCAKX); err != nil {
		return nil, err
	}
	kxKey, err := cfg.Token.FindKey(ctx, LabelCCAKX)
	if err != nil {
		return nil, fmt.Errorf("ca: CCA key-exchange key: %w", err)
	}
	l.CCAKXKey = kxKey
	tlsChain, err := ReadPEMFile(filepath.Join(cfg.Dir, FileTLSChain))
	if err != nil {
		return nil, err
	}
	tlsKey, err := cfg.Token.FindKey(ctx, LabelTLS)
	if err != nil {
		return nil, fmt.Errorf("ca: TLS key: %w", err)
	}
	if !pubEqual(tlsKey.Public(), tlsChain[0].PublicKey) {
		return nil, errors.New("ca: TLS key does not match tls.pem")
	}
	l.TLS = tlsrpc.Identity{Cert: tlsChain[0], Key: tlsKey, Chain: tlsChain[1:]}
	return l, nil
}

// ByRole returns the authority of a CA role (root, brand, cca, mca, pca).
func (h *Hierarchy) ByRole(r pki.Role) *Authority {
	switch r {
	case pki.RoleRoot:
		return h.Root
	case pki.RoleBrand:
		return h.Brand
	case pki.RoleCCA:
		return h.CCA
	case pki.RoleMCA:
		return h.MCA
	case pki.RolePCA:
		return h.PCA
	}
	return nil
}
