package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
)

// Key algorithm names used across the project (KeyGenerator arguments, config). They
// are the token layer's names too (hsm.Algorithm), so one vocabulary serves the
// certificates, the configs and the tokens; ca.TokenAlgorithm is the one mapping.
const (
	AlgECDSAP256 = "ecdsa-p256"
	AlgECDSAP384 = "ecdsa-p384"
	AlgRSA2048   = "rsa2048"
	AlgRSA3072   = "rsa3072"
	AlgRSA4096   = "rsa4096"
)

// Algorithms lists the allowed key algorithms.
func Algorithms() []string {
	return []string{AlgECDSAP256, AlgECDSAP384, AlgRSA2048, AlgRSA3072, AlgRSA4096}
}

// CheckPublicKey accepts only ECDSA P-256/P-384 and RSA 2048/3072/4096 with a
// sane public exponent, and returns the algorithm name.
func CheckPublicKey(pub any) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return AlgECDSAP256, nil
		case elliptic.P384():
			return AlgECDSAP384, nil
		}
		return "", &Error{Reason: ReasonUnsupportedKey, Err: fmt.Errorf("ECDSA curve %s not allowed", k.Curve.Params().Name)}
	case *rsa.PublicKey:
		if k.E < 3 || k.E%2 == 0 {
			return "", &Error{Reason: ReasonUnsupportedKey, Err: fmt.Errorf("RSA public exponent %d not allowed", k.E)}
		}
		switch k.N.BitLen() {
		case 2048:
			return AlgRSA2048, nil
		case 3072:
			return AlgRSA3072, nil
		case 4096:
			return AlgRSA4096, nil
		}
		return "", &Error{Reason: ReasonUnsupportedKey, Err: fmt.Errorf("RSA modulus of %d bits not allowed", k.N.BitLen())}
	case nil:
		return "", &Error{Reason: ReasonUnsupportedKey, Err: fmt.Errorf("no public key")}
	}
	return "", &Error{Reason: ReasonUnsupportedKey, Err: fmt.Errorf("key type %T not allowed", pub)}
}

// KeyUsageFor returns the exact KeyUsage an end-entity certificate of
// purpose p with public key pub must carry: digitalSignature for signature
// keys; keyEncipherment for RSA or keyAgreement for EC key-exchange keys.
// Used by the CA when issuing and by the verifier when checking.
func KeyUsageFor(p Purpose, pub any) (x509.KeyUsage, error) {
	switch p {
	case PurposeSignature:
		return x509.KeyUsageDigitalSignature, nil
	case PurposeKeyExchange:
		switch pub.(type) {
		case *rsa.PublicKey:
			return x509.KeyUsageKeyEncipherment, nil
		case *ecdsa.PublicKey:
			return x509.KeyUsageKeyAgreement, nil
		}
		return 0, &Error{Reason: ReasonUnsupportedKey, Err: fmt.Errorf("key type %T cannot exchange keys", pub)}
	}
	return 0, &Error{Reason: ReasonWrongKeyUsage, Err: fmt.Errorf("purpose %s has no end-entity key usage", p)}
}

// CAKeyUsage is the KeyUsage of every CA certificate.
const CAKeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
