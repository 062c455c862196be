package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/setpay/setpay/hsm"
)

// TLSUsage is the one thing a TLS certificate the CA issues is good for: each
// certificate carries exactly one extended key usage, so a server's key cannot act as
// a client and a client's key cannot serve.
type TLSUsage int

// TLS usages.
const (
	TLSServer TLSUsage = iota + 1 // serverAuth, with the CSR's DNS names and IP addresses
	TLSClient                     // clientAuth, no names but the subject CN
)

func (u TLSUsage) String() string {
	switch u {
	case TLSServer:
		return "server"
	case TLSClient:
		return "client"
	}
	return fmt.Sprintf("TLSUsage(%d)", int(u))
}

// ParseTLSUsage maps "server" or "client" to its usage.
func ParseTLSUsage(s string) (TLSUsage, error) {
	switch s {
	case "server":
		return TLSServer, nil
	case "client":
		return TLSClient, nil
	}
	return 0, fmt.Errorf("ca: TLS usage %q unknown (server or client)", s)
}

// Bounds of TLS certificate requests and certificates.
const (
	MaxTLSCSRSize      = 16 << 10
	MaxTLSNames        = 16
	DefaultTLSValidity = 90 * 24 * time.Hour
	MaxTLSValidity     = 398 * 24 * time.Hour
)

// TLSCA is the CA's TLS issuer: tls-ca.pem and its key in the CA token. It certifies
// the services' TLS keys (which stay in their own tokens) from their CSRs.
type TLSCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// LoadTLSCA reads the TLS CA certificate InitDir wrote in dir and finds its key in
// tok; the key must match the certificate.
func LoadTLSCA(ctx context.Context, dir string, tok *hsm.Token) (*TLSCA, error) {
	certs, err := ReadPEMFile(filepath.Join(dir, FileTLSCA))
	if err != nil {
		return nil, err
	}
	key, err := tok.FindKey(ctx, LabelTLSIssuer)
	if err != nil {
		return nil, fmt.Errorf("ca: TLS issuer key: %w", err)
	}
	if !pubEqual(key.Public(), certs[0].PublicKey) {
		return nil, fmt.Errorf("ca: TLS issuer key %q in token %q does not match %s", LabelTLSIssuer, tok.Label(), FileTLSCA)
	}
	if !certs[0].IsCA {
		return nil, fmt.Errorf("ca: %s is not a CA certificate", FileTLSCA)
	}
	return &TLSCA{cert: certs[0], key: key}, nil
}

// Certificate is the TLS CA certificate (the trust anchor services configure).
func (c *TLSCA) Certificate() *x509.Certificate { return c.cert }

// TLSRequest is one CSR to certify.
type TLSRequest struct {
	CSR      []byte // DER PKCS#10
	Usage    TLSUsage
	Validity time.Duration // zero: DefaultTLSValidity
	Now      time.Time     // zero: time.Now()
}

// ParseTLSCSR parses and checks a CSR: size, its signature (the requester holds the
// key), the key type, a subject CN and, for the names it asks for, DNS names and IP
// addresses only.
func ParseTLSCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, errors.New("ca: CSR: empty")
	}
	if len(der) > MaxTLSCSRSize {
		return nil, fmt.Errorf("ca: CSR: %d bytes exceed %d", len(der), MaxTLSCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("ca: CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("ca: CSR signature does not verify (not signed by the key it names): %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("ca: CSR: ECDSA curve %s not accepted (P-256 or P-384)", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("ca: CSR: RSA key of %d bits not accepted (2048 or more)", k.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("ca: CSR: key type %T not accepted (ECDSA or RSA)", csr.PublicKey)
	}
	if cn := csr.Subject.CommonName; strings.TrimSpace(cn) == "" || len(cn) > 64 || strings.ContainsFunc(cn, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return nil, errors.New("ca: CSR: the subject common name must be 1..64 printable characters")
	}
	if len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, errors.New("ca: CSR: only DNS names and IP addresses may be asked for")
	}
	if n := len(csr.DNSNames) + len(csr.IPAddresses); n > MaxTLSNames {
		return nil, fmt.Errorf("ca: CSR: %d names exceed %d", n, MaxTLSNames)
	}
	for _, d := range csr.DNSNames {
		if err := CheckDNSName(d); err != nil {
			return nil, fmt.Errorf("ca: CSR: %w", err)
		}
	}
	return csr, nil
}

// CheckDNSName accepts a host name of letters, digits and hyphens in dot-separated
// labels (no wildcard).
func CheckDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("DNS name %q: empty or longer than 253", name)
	}
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("DNS name %q: bad label %q", name, l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("DNS name %q: character %q not allowed", name, r)
			}
		}
	}
	return nil
}

// Issue certifies the CSR's key: key usage digitalSignature, exactly one extended key
// usage (serverAuth or clientAuth), the CSR's subject CN and, for a server, its DNS
// names and IP addresses (at least one). It returns the leaf and the TLS CA
// certificate, in that order.
func (c *TLSCA) Issue(req TLSRequest) ([]*x509.Certificate, error) {
	csr, err := ParseTLSCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultTLSValidity
	}
	if validity < time.Hour || validity > MaxTLSValidity {
		return nil, fmt.Errorf("ca: TLS validity %s outside 1h..%s", validity, MaxTLSValidity)
	}
	notAfter := now.Add(validity)
	if notAfter.After(c.cert.NotAfter) {
		return nil, fmt.Errorf("ca: TLS validity ends %s, after the TLS CA's own (%s)", notAfter.UTC().Format(time.RFC3339), c.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: csr.Subject.CommonName},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	switch req.Usage {
	case TLSServer:
		if len(csr.DNSNames)+len(csr.IPAddresses) == 0 {
			return nil, errors.New("ca: CSR: a server certificate needs at least one DNS name or IP address")
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = csr.DNSNames
		tmpl.IPAddresses = append([]net.IP(nil), csr.IPAddresses...)
	case TLSClient:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return nil, fmt.Errorf("ca: TLS usage %v unknown (server or client)", req.Usage)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)); err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	tmpl.SerialNumber.Add(tmpl.SerialNumber, big.NewInt(1))
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, csr.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("ca: issue TLS certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: issued TLS certificate: %w", err)
	}
	return []*x509.Certificate{leaf, c.cert}, nil
}
