package tlsrpc

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Identity is a TLS certificate with its key (a token key, as a crypto.Signer).
type Identity struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate // intermediates, leaf excluded
}

// TLSCertificate is the identity in the form crypto/tls wants; the private key stays a
// crypto.Signer, so the TLS handshake signs inside the token.
func (id Identity) TLSCertificate() tls.Certificate {
	c := tls.Certificate{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key, Leaf: id.Cert}
	for _, ch := range id.Chain {
		c.Certificate = append(c.Certificate, ch.Raw)
	}
	return c
}

// ServerTLS requires and verifies a client certificate from clientCAs: the signer
// service authorises by the client certificate, so an anonymous client never gets in.
func ServerTLS(id Identity, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
	}
}

// ClientTLS presents id and trusts roots for the server named serverName.
func ClientTLS(id *Identity, roots *x509.CertPool, serverName string) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: serverName}
	if id != nil {
		c.Certificates = []tls.Certificate{id.TLSCertificate()}
	}
	return c
}

// TLSIssuer issues short-lived TLS certificates for service-to-service links from a CA
// key (in a token). It is for the transport only; SET certificates come from package ca.
type TLSIssuer struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// NewTLSIssuer makes a self-signed TLS CA named name with key.
func NewTLSIssuer(name string, key crypto.Signer, validity time.Duration) (*TLSIssuer, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	cert, err := issue(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return &TLSIssuer{cert: cert, key: key}, nil
}

// Certificate is the issuer's CA certificate.
func (i *TLSIssuer) Certificate() *x509.Certificate { return i.cert }

// Pool is a pool holding only this issuer.
func (i *TLSIssuer) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(i.cert)
	return p
}

// Issue certifies key for name as a server and as a client at once.
//
// Deprecated: a certificate good for both ends lets a server's key act as a client
// (and the reverse). Use IssueServer or IssueClient; Issue remains for the signer
// service and tools until they move.
func (i *TLSIssuer) Issue(name string, key crypto.Signer, validity time.Duration) (Identity, error) {
	return i.issueFor(name, key, validity, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
}

// IssueServer certifies key for the server name (a DNS name or an IP address), with
// server authentication as its only extended key usage.
func (i *TLSIssuer) IssueServer(name string, key crypto.Signer, validity time.Duration) (Identity, error) {
	return i.issueFor(name, key, validity, x509.ExtKeyUsageServerAuth)
}

// IssueClient certifies key for the client name (its subject CN, e.g.
// "merchant:<id>"), with client authentication as its only extended key usage and
// no server name, so it cannot serve.
func (i *TLSIssuer) IssueClient(name string, key crypto.Signer, validity time.Duration) (Identity, error) {
	return i.issueFor(name, key, validity, x509.ExtKeyUsageClientAuth)
}

func (i *TLSIssuer) issueFor(name string, key crypto.Signer, validity time.Duration, usage ...x509.ExtKeyUsage) (Identity, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		NotBefore:   time.Now().Add(-time.Minute),
		NotAfter:    time.Now().Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: usage,
	}
	if slices.Contains(usage, x509.ExtKeyUsageServerAuth) {
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = []net.IP{ip}
		} else {
			tmpl.DNSNames = []string{name}
		}
	}
	cert, err := issue(tmpl, i.cert, key.Public(), i.key)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Cert: cert, Key: key}, nil
}

func issue(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("signer: serial: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("signer: issue TLS certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}
