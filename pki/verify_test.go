package pki_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/ca/catest"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/pki"
)

type entity struct {
	sig, kx *x509.Certificate
}

func enroll(t *testing.T, f *catest.Fixture, role pki.Role, id string) entity {
	t.Helper()
	ctx := context.Background()
	a := f.H.Issuing(role)
	secret, err := a.Enroll(ctx, role, id)
	require.NoError(t, err)
	certs, err := a.IssueEntity(ctx, ca.EntityRequest{
		Role: role, ID: id, Secret: secret,
		SignatureCSR:   catest.CSR(t, f.Key(t, pki.AlgECDSAP256, hsm.UsageSign), id),
		KeyExchangeCSR: catest.CSR(t, f.Key(t, pki.AlgECDSAP384, hsm.UsageSign), id), // EC: keeps RSA keygen (slow) to package ca
	})
	require.NoError(t, err)
	return entity{sig: certs.Signature, kx: certs.KeyExchange}
}

// forge signs tmpl with a CA's real token key, bypassing the Authority's
// policy: what a compromised or buggy issuer could produce.
func forge(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	s := make([]byte, 16)
	_, err := rand.Read(s)
	require.NoError(t, err)
	tmpl.SerialNumber = new(big.Int).SetBytes(s)
	tmpl.BasicConstraintsValid = true
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}

func TestVerifier(t *testing.T) {
	ctx := context.Background()
	f := catest.New(t)
	other := catest.New(t) // a complete hierarchy under a different root

	merchant := enroll(t, f, pki.RoleMerchant, "shop-1")
	revokedMerchant := enroll(t, f, pki.RoleMerchant, "shop-2")
	gateway := enroll(t, f, pki.RoleGateway, "gw-1")
	foreign := enroll(t, other, pki.RoleMerchant, "shop-1")
	require.NoError(t, f.H.MCA.Revoke(ctx, revokedMerchant.sig.SerialNumber, ca.RevokeKeyCompromise))
	f.PublishCRLs(t)
	now := time.Now()

	mcaKey := f.Keys.Signer("setpay-mca")
	require.NotNil(t, mcaKey)
	leafKey := f.Key(t, pki.AlgECDSAP256, hsm.UsageSign)
	// The MCA's key signs a certificate claiming the gateway role.
	fakeGateway := forge(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "gateway:evil"}, KeyUsage: x509.KeyUsageDigitalSignature,
		Policies: pki.Policies(pki.RoleGateway, pki.PurposeSignature),
	}, f.H.MCA.Certificate(), leafKey.Public(), mcaKey)
	// The MCA (path length 0) signs a sub-CA which signs a merchant.
	subKey := f.Key(t, pki.AlgECDSAP256, hsm.UsageSign)
	subCA := forge(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "rogue sub-CA"}, IsCA: true, KeyUsage: pki.CAKeyUsage,
		Policies: pki.Policies(pki.RoleMCA, pki.PurposeNone), SubjectKeyId: []byte("rogue-sub-ca-key-id!"),
	}, f.H.MCA.Certificate(), subKey.Public(), mcaKey)
	underSub := forge(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "merchant:under-rogue"}, KeyUsage: x509.KeyUsageDigitalSignature,
		Policies: pki.Policies(pki.RoleMerchant, pki.PurposeSignature),
	}, subCA, leafKey.Public(), subKey)
	// Correct role and issuer, but both purposes' key usages.
	badKU := forge(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "merchant:ku"}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		Policies: pki.Policies(pki.RoleMerchant, pki.PurposeSignature),
	}, f.H.MCA.Certificate(), leafKey.Public(), mcaKey)
	// KeyUsage says signature, policy says key exchange.
	purposeMismatch := forge(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "merchant:pp"}, KeyUsage: x509.KeyUsageDigitalSignature,
		Policies: pki.Policies(pki.RoleMerchant, pki.PurposeKeyExchange),
	}, f.H.MCA.Certificate(), leafKey.Public(), mcaKey)
	// A tampered signature.
	tampered := append([]byte(nil), merchant.sig.Raw...)
	tampered[len(tampered)-3] ^= 0x40
	tamperedCert, err := x509.ParseCertificate(tampered)
	require.NoError(t, err)

	mcaChain := f.Intermediates(pki.RoleMerchant)
	sigMerchant := pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature}
	cases := []struct {
		name   string
		leaf   *x509.Certificate
		inter  []*x509.Certificate
		want   pki.Expect
		at     time.Time
		reason pki.Reason // ReasonUnknown with ok=true means success
		ok     bool
	}{
		{"valid merchant signature", merchant.sig, mcaChain, sigMerchant, now, 0, true},
		{"valid merchant key exchange", merchant.kx, mcaChain, pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeKeyExchange}, now, 0, true},
		{"valid gateway", gateway.sig, f.Intermediates(pki.RoleGateway), pki.Expect{Role: pki.RoleGateway, Purpose: pki.PurposeSignature}, now, 0, true},
		{"intermediates unordered with root", merchant.sig, []*x509.Certificate{f.H.Root.Certificate(), f.H.Brand.Certificate(), f.H.MCA.Certificate()}, sigMerchant, now, 0, true},
		{"expired", merchant.sig, mcaChain, sigMerchant, merchant.sig.NotAfter.Add(time.Hour), pki.ReasonExpired, false},
		{"not yet valid", merchant.sig, mcaChain, sigMerchant, merchant.sig.NotBefore.Add(-time.Hour), pki.ReasonNotYetValid, false},
		{"revoked", revokedMerchant.sig, mcaChain, sigMerchant, now, pki.ReasonRevoked, false},
		{"wrong role", gateway.sig, f.Intermediates(pki.RoleGateway), sigMerchant, now, pki.ReasonWrongRole, false},
		{"signature cert used for key exchange", merchant.sig, mcaChain, pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeKeyExchange}, now, pki.ReasonWrongKeyUsage, false},
		{"key-exchange cert used for signature", merchant.kx, mcaChain, sigMerchant, now, pki.ReasonWrongKeyUsage, false},
		{"extra key usage", badKU, mcaChain, sigMerchant, now, pki.ReasonWrongKeyUsage, false},
		{"purpose policy disagrees with key usage", purposeMismatch, mcaChain, sigMerchant, now, pki.ReasonWrongKeyUsage, false},
		{"chain to another root", foreign.sig, other.Intermediates(pki.RoleMerchant), sigMerchant, now, pki.ReasonUntrustedRoot, false},
		{"other root's intermediates offered", foreign.sig, append(other.Intermediates(pki.RoleMerchant), other.H.Root.Certificate()), sigMerchant, now, pki.ReasonUntrustedRoot, false},
		{"MCA-signed cert claiming gateway", fakeGateway, mcaChain, pki.Expect{Role: pki.RoleGateway, Purpose: pki.PurposeSignature}, now, pki.ReasonWrongRole, false},
		{"sub-CA below a path length 0 CA", underSub, append([]*x509.Certificate{subCA}, mcaChain...), sigMerchant, now, pki.ReasonPathLength, false},
		{"tampered signature", tamperedCert, mcaChain, sigMerchant, now, pki.ReasonBadSignature, false},
		{"missing intermediates", merchant.sig, nil, sigMerchant, now, pki.ReasonUntrustedRoot, false},
		{"CRL expired", merchant.sig, mcaChain, sigMerchant, now.Add(48 * time.Hour), pki.ReasonCRLUnavailable, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			chain, err := f.Verifier.Verify(ctx, c.leaf, c.inter, c.want, c.at)
			if c.ok {
				require.NoError(t, err)
				require.Len(t, chain, 4)
				assert.True(t, chain[3].Equal(f.H.Root.Certificate()))
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, c.reason, err.Error())
			assert.Equal(t, c.reason, pki.ReasonOf(err))
			var pe *pki.Error
			assert.ErrorAs(t, err, &pe)
			assert.Nil(t, chain)
		})
	}
}

func TestVerifierCRLs(t *testing.T) {
	ctx := context.Background()
	f := catest.New(t)
	m := enroll(t, f, pki.RoleMerchant, "shop-1")
	want := pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature}

	t.Run("no CRL", func(t *testing.T) {
		v, err := pki.NewVerifier(f.H.Root.Certificate(), pki.NewMemoryCRLs())
		require.NoError(t, err)
		_, err = v.Verify(ctx, m.sig, f.Intermediates(pki.RoleMerchant), want, time.Now())
		assert.ErrorIs(t, err, pki.ReasonCRLUnavailable)
	})
	t.Run("CRL signed by another MCA key", func(t *testing.T) {
		other := catest.New(t)
		crls := pki.NewMemoryCRLs()
		for _, a := range f.H.Authorities() {
			if a.Role() == pki.RoleMCA {
				continue
			}
			crl, err := a.CRL(ctx)
			require.NoError(t, err)
			require.NoError(t, crls.Put(crl))
		}
		// Issuer name and key id of our MCA, signature by the other MCA's key.
		fakeIssuer := *f.H.MCA.Certificate()
		fakeIssuer.PublicKey = other.H.MCA.Certificate().PublicKey
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(99), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour),
		}, &fakeIssuer, other.Keys.Signer("setpay-mca"))
		require.NoError(t, err)
		require.NoError(t, crls.PutDER(der))
		v, err := pki.NewVerifier(f.H.Root.Certificate(), crls)
		require.NoError(t, err)
		_, err = v.Verify(ctx, m.sig, f.Intermediates(pki.RoleMerchant), want, time.Now())
		assert.ErrorIs(t, err, pki.ReasonCRLUnavailable)
	})
	t.Run("older CRL cannot replace newer", func(t *testing.T) {
		crls := pki.NewMemoryCRLs()
		old, err := f.H.MCA.CRL(ctx)
		require.NoError(t, err)
		newer, err := f.H.MCA.CRL(ctx)
		require.NoError(t, err)
		require.NoError(t, crls.Put(newer))
		assert.Error(t, crls.Put(old))
	})
}

func TestNewVerifierRejectsNonRoot(t *testing.T) {
	f := catest.New(t)
	_, err := pki.NewVerifier(f.H.Brand.Certificate(), pki.NewMemoryCRLs())
	assert.ErrorIs(t, err, pki.ReasonWrongRole)
	_, err = pki.NewVerifier(f.H.Root.Certificate(), nil)
	assert.Error(t, err)
}

func TestVerifyBadExpectation(t *testing.T) {
	f := catest.New(t)
	m := enroll(t, f, pki.RoleMerchant, "shop-1")
	for _, want := range []pki.Expect{
		{Role: pki.RoleMerchant},
		{Role: pki.RoleMCA, Purpose: pki.PurposeSignature},
		{Role: pki.RoleCardholder, Purpose: pki.PurposeKeyExchange},
	} {
		_, err := f.Verifier.Verify(context.Background(), m.sig, f.Intermediates(pki.RoleMerchant), want, time.Now())
		assert.Error(t, err, "%+v", want)
	}
}

func TestRoleHelpers(t *testing.T) {
	f := catest.New(t)
	m := enroll(t, f, pki.RoleMerchant, "shop-7")
	r, id, err := pki.EntityID(m.sig)
	require.NoError(t, err)
	assert.Equal(t, pki.RoleMerchant, r)
	assert.Equal(t, "shop-7", id)
	_, _, err = pki.EntityID(f.H.MCA.Certificate())
	assert.ErrorIs(t, err, pki.ReasonWrongRole)

	for _, r := range pki.Roles() {
		back, err := pki.ParseRole(r.String())
		require.NoError(t, err)
		assert.Equal(t, r, back)
		assert.Contains(t, r.OID().String(), pki.ArcPolicies+".")
	}
	assert.Equal(t, pki.RoleMCA, pki.RoleMerchant.Issuer())
	assert.Equal(t, pki.RolePCA, pki.RoleGateway.Issuer())
	assert.Equal(t, pki.RoleCCA, pki.RoleCardholder.Issuer())
	assert.NotEqual(t, pki.PurposeSignature.OID().String(), pki.PurposeKeyExchange.OID().String())
}

// TestVerifierCacheNeverOutlivesItsEvidence: a verified chain is cached, but a CRL
// published afterwards (a revocation) is seen at once, and a time past the CRL's
// nextUpdate is not answered from the cache.
func TestVerifierCacheNeverOutlivesItsEvidence(t *testing.T) {
	ctx := context.Background()
	f := catest.New(t)
	m := enroll(t, f, pki.RoleMerchant, "shop-cache")
	f.PublishCRLs(t)
	want := pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature}
	chain := f.Intermediates(pki.RoleMerchant)
	now := time.Now()
	for range 3 { // the second and third answers come from the cache
		got, err := f.Verifier.Verify(ctx, m.sig, chain, want, now)
		require.NoError(t, err)
		require.Equal(t, m.sig, got[0])
	}
	crl, err := f.CRLs.CRL(ctx, f.H.MCA.Certificate())
	require.NoError(t, err)
	_, err = f.Verifier.Verify(ctx, m.sig, chain, want, crl.NextUpdate.Add(time.Minute))
	assert.ErrorIs(t, err, pki.ReasonCRLUnavailable, "a stale CRL is not papered over by the cache")

	require.NoError(t, f.H.MCA.Revoke(ctx, m.sig.SerialNumber, ca.RevokeKeyCompromise))
	f.PublishCRLs(t)
	_, err = f.Verifier.Verify(ctx, m.sig, chain, want, time.Now())
	assert.ErrorIs(t, err, pki.ReasonRevoked, "the revocation is seen although the chain was cached")
}
