package pki

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Limits for certificates taken from untrusted bytes. A SET chain is at most
// leaf, issuing CA, brand, root; the slack allows cross-certificates later.
const (
	MaxCertificateSize = 16 << 10 // bytes of one DER certificate
	MaxChainLength     = 8        // certificates in one message
)

// ParseCertificate parses one DER certificate from untrusted bytes, enforcing
// MaxCertificateSize and rejecting trailing data.
func ParseCertificate(der []byte) (*x509.Certificate, error) {
	if len(der) == 0 {
		return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("empty certificate")}
	}
	if len(der) > MaxCertificateSize {
		return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("certificate of %d bytes exceeds limit %d", len(der), MaxCertificateSize)}
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("parse certificate: %w", err)}
	}
	return c, nil
}

// ParseCertificates parses a concatenation of DER certificates (the shape of a
// CMS certificates field or x509.ParseCertificates input). This is the one
// entry point for chains from untrusted bytes: every element must be a
// SEQUENCE within MaxCertificateSize and there may be at most MaxChainLength.
func ParseCertificates(der []byte) ([]*x509.Certificate, error) {
	if len(der) > MaxChainLength*MaxCertificateSize {
		return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("certificate data of %d bytes exceeds limit", len(der))}
	}
	s := cryptobyte.String(der)
	var out []*x509.Certificate
	for !s.Empty() {
		if len(out) == MaxChainLength {
			return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("more than %d certificates", MaxChainLength)}
		}
		var elem cryptobyte.String
		if !s.ReadASN1Element(&elem, cbasn1.SEQUENCE) {
			return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("certificate %d: not a DER SEQUENCE", len(out))}
		}
		c, err := ParseCertificate(elem)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out), err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("no certificates")}
	}
	return out, nil
}

// ParseCertificateList parses certificates given as separate DER blobs.
func ParseCertificateList(ders [][]byte) ([]*x509.Certificate, error) {
	if len(ders) == 0 || len(ders) > MaxChainLength {
		return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("%d certificates, want 1..%d", len(ders), MaxChainLength)}
	}
	out := make([]*x509.Certificate, 0, len(ders))
	for i, d := range ders {
		c, err := ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// ParsePEMCertificates parses "CERTIFICATE" PEM blocks (configuration files,
// not protocol messages), with the same limits. Other block types are refused.
func ParsePEMCertificates(data []byte) ([]*x509.Certificate, error) {
	var ders [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("unexpected PEM block %q", b.Type)}
		}
		if len(ders) == MaxChainLength {
			return nil, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("more than %d certificates", MaxChainLength)}
		}
		ders = append(ders, b.Bytes)
	}
	return ParseCertificateList(ders)
}

// EncodePEM returns the certificates as concatenated "CERTIFICATE" PEM blocks.
func EncodePEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// EncodeCRLPEM returns the CRLs as concatenated "X509 CRL" PEM blocks.
func EncodeCRLPEM(crls ...*x509.RevocationList) []byte {
	var out []byte
	for _, c := range crls {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: c.Raw})...)
	}
	return out
}
