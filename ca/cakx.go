package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/setpay/setpay/pki"
)

// IssueCAKeyExchange issues, from the brand CA, the key-exchange certificate
// of an issuing CA (in SET the CCA needs one: wallets envelope the card data
// of a certificate request to it). The certificate carries the issuing CA's
// role policy and the key-exchange purpose policy, is NOT a CA certificate
// (no keyCertSign, BasicConstraints CA false), has the key usage of an
// end-entity key-exchange key and the same subject as the CA's own
// certificate, so a client can tie the two together. Only the brand may issue
// it, only for cca, mca or pca.
//
// There is no CSR: the key is generated in the CA's own token during the
// same ceremony (`setpay ca init`), and a token key-exchange key may not sign.
func (a *Authority) IssueCAKeyExchange(ctx context.Context, ca *x509.Certificate, pub crypto.PublicKey, validity time.Duration) (*x509.Certificate, error) {
	if a.role != pki.RoleBrand {
		return nil, fail(ReasonRoleNotAllowed, "a %s may not issue CA key-exchange certificates", a.role)
	}
	if ca == nil {
		return nil, fail(ReasonBadRequest, "no CA certificate")
	}
	role, err := pki.RoleOf(ca)
	if err != nil || (role != pki.RoleCCA && role != pki.RoleMCA && role != pki.RolePCA) {
		return nil, fail(ReasonRoleNotAllowed, "key-exchange certificates are for issuing CAs only")
	}
	if err := ca.CheckSignatureFrom(a.cert); err != nil {
		return nil, fail(ReasonRoleNotAllowed, "%s certificate not issued by this brand", role)
	}
	if _, err := pki.CheckPublicKey(pub); err != nil {
		return nil, &Error{Reason: ReasonKeyNotAllowed, Err: err}
	}
	if pubEqual(ca.PublicKey, pub) {
		return nil, fail(ReasonKeyNotAllowed, "signature and key-exchange keys must differ")
	}
	if validity == 0 {
		validity = time.Until(ca.NotAfter)
	}
	p := profile{pub: pub, role: role, purpose: pki.PurposeKeyExchange, subject: ca.Subject,
		subjectID: ca.Subject.CommonName, validity: validity, notAfter: ca.NotAfter, caKeyExchange: true}
	return a.sign(ctx, p)
}

// VerifyCAKeyExchange checks the key-exchange certificate kx of the issuing
// CA whose certificate is caCert (verified first with v, intermediates
// offered as for Verify): kx must be issued by the brand CA that issued caCert,
// carry the same subject and role policy, the key-exchange purpose policy and
// exactly the end-entity key-exchange key usage, not be a CA certificate, be
// valid at `at` and not be on the brand's CRL. pki.Verifier refuses such a
// certificate as a leaf on purpose (a CA role without CA powers); this is the
// one place that accepts it, and only for this use.
func VerifyCAKeyExchange(ctx context.Context, v *pki.Verifier, crls pki.CRLSource, kx, caCert *x509.Certificate, intermediates []*x509.Certificate, at time.Time) error {
	if kx == nil || caCert == nil || v == nil || crls == nil {
		return &pki.Error{Reason: pki.ReasonMalformed, Err: fmt.Errorf("missing certificate, verifier or CRL source")}
	}
	bad := func(r pki.Reason, format string, args ...any) error {
		return &pki.Error{Reason: r, Subject: kx.Subject.String(), Err: fmt.Errorf("CA key-exchange certificate: "+format, args...)}
	}
	role, err := pki.RoleOf(caCert)
	if err != nil {
		return err
	}
	if role != pki.RoleCCA && role != pki.RoleMCA && role != pki.RolePCA {
		return bad(pki.ReasonWrongRole, "%s is not an issuing CA", role)
	}
	chain, err := v.Verify(ctx, caCert, intermediates, pki.Expect{Role: role}, at)
	if err != nil {
		return err
	}
	if len(chain) < 2 {
		return bad(pki.ReasonWrongRole, "issuing CA without a brand")
	}
	brand := chain[1]
	if !bytes.Equal(kx.RawIssuer, brand.RawSubject) || !bytes.Equal(kx.AuthorityKeyId, brand.SubjectKeyId) {
		return bad(pki.ReasonUntrustedRoot, "not issued by the brand CA")
	}
	if err := kx.CheckSignatureFrom(brand); err != nil {
		return bad(pki.ReasonBadSignature, "%v", err)
	}
	if len(kx.UnhandledCriticalExtensions) > 0 {
		return bad(pki.ReasonUnhandledCritical, "unhandled critical extension")
	}
	if !bytes.Equal(kx.RawSubject, caCert.RawSubject) {
		return bad(pki.ReasonWrongRole, "subject differs from the CA certificate")
	}
	if r, err := pki.RoleOf(kx); err != nil || r != role {
		return bad(pki.ReasonWrongRole, "role policy is not %s", role)
	}
	if kx.IsCA || !kx.BasicConstraintsValid {
		return bad(pki.ReasonWrongKeyUsage, "must be a non-CA certificate")
	}
	if _, err := pki.CheckPublicKey(kx.PublicKey); err != nil {
		return err
	}
	ku, err := pki.KeyUsageFor(pki.PurposeKeyExchange, kx.PublicKey)
	if err != nil {
		return bad(pki.ReasonWrongKeyUsage, "%v", err)
	}
	if p, err := pki.PurposeOf(kx); err != nil || p != pki.PurposeKeyExchange || kx.KeyUsage != ku {
		return bad(pki.ReasonWrongKeyUsage, "needs the key-exchange purpose and key usage %#x", ku)
	}
	if at.Before(kx.NotBefore) {
		return bad(pki.ReasonNotYetValid, "valid from %s", kx.NotBefore.UTC().Format(time.RFC3339))
	}
	if !at.Before(kx.NotAfter) {
		return bad(pki.ReasonExpired, "expired %s", kx.NotAfter.UTC().Format(time.RFC3339))
	}
	crl, err := crls.CRL(ctx, brand)
	if err != nil || crl == nil {
		return bad(pki.ReasonCRLUnavailable, "no brand CRL: %v", err)
	}
	if !bytes.Equal(crl.RawIssuer, brand.RawSubject) || !bytes.Equal(crl.AuthorityKeyId, brand.SubjectKeyId) {
		return bad(pki.ReasonCRLUnavailable, "brand CRL from another issuer")
	}
	if err := crl.CheckSignatureFrom(brand); err != nil {
		return bad(pki.ReasonCRLUnavailable, "brand CRL signature: %v", err)
	}
	if crl.ThisUpdate.After(at.Add(pki.CRLClockSkew)) || !at.Before(crl.NextUpdate) {
		return bad(pki.ReasonCRLUnavailable, "brand CRL not current")
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(kx.SerialNumber) == 0 {
			return bad(pki.ReasonRevoked, "revoked")
		}
	}
	return nil
}
