package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/setpay/setpay/pki"
)

// Default validity of end-entity certificates (further capped by the issuer
// and, for cardholders, by the card expiry).
const DefaultEndEntityValidity = 2 * 365 * 24 * time.Hour

// CARequest asks a root or brand CA for a subordinate CA certificate.
type CARequest struct {
	Role       pki.Role // brand (from the root) or cca/mca/pca (from the brand)
	CommonName string
	CSR        []byte // PKCS#10, DER, signed by the subordinate's token key
	Validity   time.Duration
}

// IssueSubordinateCA issues a CA certificate with the role's policy and path
// length (brand 1, issuing CAs 0).
func (a *Authority) IssueSubordinateCA(ctx context.Context, req CARequest) (*x509.Certificate, error) {
	if !req.Role.IsCA() || req.Role == pki.RoleRoot || req.Role.Issuer() != a.role {
		return nil, fail(ReasonRoleNotAllowed, "a %s may not issue a %s CA certificate", a.role, req.Role)
	}
	if req.CommonName == "" || len(req.CommonName) > 64 {
		return nil, fail(ReasonBadRequest, "CA common name must be 1..64 characters")
	}
	csr, err := parseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	return a.sign(ctx, profile{pub: csr.PublicKey, role: req.Role, subject: a.subject(req.CommonName), subjectID: req.CommonName, validity: req.Validity})
}

// CardholderRequest asks a CCA for a cardholder signature certificate. The
// card data is used only to derive the CardholderID; it is neither stored nor
// logged (the log shows the masked PAN at most).
type CardholderRequest struct {
	CSR          []byte // PKCS#10, DER, signed by the wallet key
	PAN          string
	Expiry       string // YYYYMM
	WalletSecret []byte // the wallet's random secret (>= 16 bytes)
	CANonce      []byte // from NewCANonce, sent to the wallet earlier
	Validity     time.Duration
}

// NewCANonce returns the CA's 32-byte random contribution to a PANSecret.
func (a *Authority) NewCANonce() ([]byte, error) {
	n := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, n); err != nil {
		return nil, fmt.Errorf("ca: nonce: %w", err)
	}
	return n, nil
}

// IssueCardholder issues a cardholder signature certificate whose subject CN
// is "cardholder:<CardholderID>". Validity ends no later than the card expiry.
func (a *Authority) IssueCardholder(ctx context.Context, req CardholderRequest) (*x509.Certificate, error) {
	if a.role != pki.RoleCCA {
		return nil, fail(ReasonRoleNotAllowed, "a %s may not issue cardholder certificates", a.role)
	}
	panSecret, err := pki.PANSecret(req.WalletSecret, req.CANonce)
	if err != nil {
		return nil, &Error{Reason: ReasonBadRequest, Err: err}
	}
	id, err := pki.CardholderID(req.PAN, req.Expiry, panSecret)
	if err != nil {
		return nil, &Error{Reason: ReasonBadRequest, Err: err}
	}
	cardEnd, err := expiryEnd(req.Expiry)
	if err != nil {
		return nil, &Error{Reason: ReasonBadRequest, Err: err}
	}
	if !cardEnd.After(a.now()) {
		return nil, fail(ReasonBadRequest, "card %s expired", pki.MaskPAN(req.PAN))
	}
	csr, err := parseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultEndEntityValidity
	}
	a.log.InfoContext(ctx, "cardholder certificate requested", "card", pki.MaskPAN(req.PAN))
	return a.sign(ctx, profile{
		pub: csr.PublicKey, role: pki.RoleCardholder, purpose: pki.PurposeSignature,
		subject: a.subject(pki.EntityCN(pki.RoleCardholder, id)), subjectID: id,
		validity: validity, notAfter: cardEnd,
	})
}

// expiryEnd is the first instant after the card's expiry month (UTC).
func expiryEnd(expiry string) (time.Time, error) {
	if err := pki.ValidateExpiry(expiry); err != nil {
		return time.Time{}, err
	}
	y, _ := strconv.Atoi(expiry[:4])
	m, _ := strconv.Atoi(expiry[4:])
	return time.Date(y, time.Month(m)+1, 1, 0, 0, 0, 0, time.UTC), nil
}

// EntityRequest asks an MCA (merchant) or PCA (gateway) for the entity's
// signature and key-exchange certificates, authorised by the enrollment
// secret from Enroll.
type EntityRequest struct {
	Role         pki.Role // merchant or gateway
	ID           string   // merchant id / gateway id, as enrolled
	Secret       string   // single-use enrollment secret
	SignatureCSR []byte   // PKCS#10 DER of the signature key
	// The key-exchange key proves possession either by a CSR (keys that may
	// sign) or, for token keys that may not, by KeyExchangeKey (SPKI DER) and
	// KeyExchangeProof (the answer to KeyExchangeChallenge). Exactly one way.
	KeyExchangeCSR   []byte
	KeyExchangeKey   []byte
	KeyExchangeProof []byte
	Validity         time.Duration
}

// EntityCertificates are the two certificates of a merchant or gateway.
type EntityCertificates struct {
	Signature   *x509.Certificate
	KeyExchange *x509.Certificate
}

// IssueEntity checks both CSRs, redeems the enrollment secret (it is spent
// even if signing then fails, so a secret can never yield two sets), and
// issues the signature certificate (digitalSignature) and the key-exchange
// certificate (keyEncipherment for RSA, keyAgreement for EC), both with
// subject CN "<role>:<id>".
func (a *Authority) IssueEntity(ctx context.Context, req EntityRequest) (*EntityCertificates, error) {
	p, err := a.AcceptEntity(ctx, req)
	if err != nil {
		return nil, err
	}
	return a.IssueAccepted(ctx, *p)
}

// AcceptedEntity is an entity request whose proofs of possession passed and
// whose enrollment secret was redeemed, waiting to be signed (at once, or
// after operator approval).
type AcceptedEntity struct {
	Role           pki.Role
	ID             string
	SignatureKey   []byte // SubjectPublicKeyInfo DER
	KeyExchangeKey []byte // SubjectPublicKeyInfo DER
	Validity       time.Duration
}

// AcceptEntity does everything IssueEntity does before signing: both proofs
// of possession, then the redemption of the enrollment secret.
func (a *Authority) AcceptEntity(ctx context.Context, req EntityRequest) (*AcceptedEntity, error) {
	if (req.Role != pki.RoleMerchant && req.Role != pki.RoleGateway) || req.Role.Issuer() != a.role {
		return nil, fail(ReasonRoleNotAllowed, "a %s may not issue %s certificates", a.role, req.Role)
	}
	if err := pki.ValidateEntityID(req.ID); err != nil {
		return nil, &Error{Reason: ReasonBadRequest, Err: err}
	}
	sigCSR, err := parseCSR(req.SignatureCSR)
	if err != nil {
		return nil, fmt.Errorf("signature CSR: %w", err)
	}
	var kxPub crypto.PublicKey
	switch {
	case len(req.KeyExchangeCSR) > 0 && len(req.KeyExchangeKey) == 0 && len(req.KeyExchangeProof) == 0:
		kxCSR, err := parseCSR(req.KeyExchangeCSR)
		if err != nil {
			return nil, fmt.Errorf("key-exchange CSR: %w", err)
		}
		kxPub = kxCSR.PublicKey
	case len(req.KeyExchangeCSR) == 0 && len(req.KeyExchangeKey) > 0:
		kxPub, err = a.checkKXProof(req.Role, req.ID, req.KeyExchangeKey, req.KeyExchangeProof)
		if err != nil {
			return nil, fmt.Errorf("key-exchange key: %w", err)
		}
	default:
		return nil, fail(ReasonBadRequest, "give either a key-exchange CSR or a key-exchange key with its proof")
	}
	if pubEqual(sigCSR.PublicKey, kxPub) {
		return nil, fail(ReasonKeyNotAllowed, "signature and key-exchange keys must differ")
	}
	sigDER, err := x509.MarshalPKIXPublicKey(sigCSR.PublicKey)
	if err != nil {
		return nil, &Error{Reason: ReasonKeyNotAllowed, Err: err}
	}
	kxDER, err := x509.MarshalPKIXPublicKey(kxPub)
	if err != nil {
		return nil, &Error{Reason: ReasonKeyNotAllowed, Err: err}
	}
	if err := a.redeem(ctx, req.Role, req.ID, req.Secret); err != nil {
		return nil, err
	}
	return &AcceptedEntity{Role: req.Role, ID: req.ID, SignatureKey: sigDER, KeyExchangeKey: kxDER, Validity: req.Validity}, nil
}

// IssueAccepted signs the two certificates of an accepted request. The keys
// are checked again, since an accepted request may have waited on disk.
func (a *Authority) IssueAccepted(ctx context.Context, p AcceptedEntity) (*EntityCertificates, error) {
	if (p.Role != pki.RoleMerchant && p.Role != pki.RoleGateway) || p.Role.Issuer() != a.role {
		return nil, fail(ReasonRoleNotAllowed, "a %s may not issue %s certificates", a.role, p.Role)
	}
	if err := pki.ValidateEntityID(p.ID); err != nil {
		return nil, &Error{Reason: ReasonBadRequest, Err: err}
	}
	keys := make([]crypto.PublicKey, 2)
	for i, der := range [][]byte{p.SignatureKey, p.KeyExchangeKey} {
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return nil, &Error{Reason: ReasonBadRequest, Err: fmt.Errorf("public key: %w", err)}
		}
		if _, err := pki.CheckPublicKey(pub); err != nil {
			return nil, &Error{Reason: ReasonKeyNotAllowed, Err: err}
		}
		keys[i] = pub
	}
	validity := p.Validity
	if validity == 0 {
		validity = DefaultEndEntityValidity
	}
	subj := a.subject(pki.EntityCN(p.Role, p.ID))
	sig, err := a.sign(ctx, profile{pub: keys[0], role: p.Role, purpose: pki.PurposeSignature, subject: subj, subjectID: p.ID, validity: validity})
	if err != nil {
		return nil, err
	}
	kx, err := a.sign(ctx, profile{pub: keys[1], role: p.Role, purpose: pki.PurposeKeyExchange, subject: subj, subjectID: p.ID, validity: validity})
	if err != nil {
		return nil, err
	}
	return &EntityCertificates{Signature: sig, KeyExchange: kx}, nil
}

// pubEqual compares public keys. The standard library's keys implement
// Equal(crypto.PublicKey), a defined type distinct from any, so the interface
// must name crypto.PublicKey or no key ever matches.
func pubEqual(a, b any) bool {
	k, ok := a.(interface{ Equal(x crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
