package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/ca/catest"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/clock"
	"github.com/setpay/setpay/internal/testenv"
	"github.com/setpay/setpay/pki"
)

const (
	testPAN    = "4111111111111111"
	testExpiry = "209912"
)

func walletSecret(t *testing.T) []byte {
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// issued holds one certificate of every profile.
type issued struct {
	cardholder        *x509.Certificate
	merchant, gateway *ca.EntityCertificates
	merchantKX, gwKX  crypto.PublicKey
}

// issueAll issues every end-entity profile with token keys: cardholder
// signature; merchant signature + RSA key-exchange; gateway signature + EC
// key-exchange (both key-exchange keys prove possession by challenge since
// the token forbids them to sign).
func issueAll(t *testing.T, f *catest.Fixture) issued {
	t.Helper()
	ctx := context.Background()
	var out issued

	chKey := f.Key(t, pki.AlgECDSAP256, hsm.UsageSign)
	nonce, err := f.H.CCA.NewCANonce()
	require.NoError(t, err)
	out.cardholder, err = f.H.CCA.IssueCardholder(ctx, ca.CardholderRequest{
		CSR: catest.CSR(t, chKey, "ignored"), PAN: testPAN, Expiry: testExpiry,
		WalletSecret: walletSecret(t), CANonce: nonce,
	})
	require.NoError(t, err)

	entity := func(a *ca.Authority, role pki.Role, id, kxAlg string) (*ca.EntityCertificates, crypto.PublicKey) {
		sec, err := a.Enroll(ctx, role, id)
		require.NoError(t, err)
		sig := f.Key(t, pki.AlgECDSAP256, hsm.UsageSign)
		kx := f.Key(t, kxAlg, hsm.UsageKeyExchange)
		spki, err := x509.MarshalPKIXPublicKey(kx.Public())
		require.NoError(t, err)
		ch, err := a.KeyExchangeChallenge(ctx, role, id, spki)
		require.NoError(t, err)
		proof, err := pki.AnswerKXChallenge(ctx, ch, kx)
		require.NoError(t, err)
		certs, err := a.IssueEntity(ctx, ca.EntityRequest{
			Role: role, ID: id, Secret: sec, SignatureCSR: catest.CSR(t, sig, id),
			KeyExchangeKey: spki, KeyExchangeProof: proof,
		})
		require.NoError(t, err)
		return certs, kx.Public()
	}
	out.merchant, out.merchantKX = entity(f.H.MCA, pki.RoleMerchant, "shop-42", pki.AlgRSA2048)
	out.gateway, out.gwKX = entity(f.H.PCA, pki.RoleGateway, "gw-1", pki.AlgECDSAP256)
	return out
}

func TestHierarchyShape(t *testing.T) {
	f := catest.New(t)
	want := []struct {
		a       *ca.Authority
		role    pki.Role
		pathLen int
		depth   int
	}{
		{f.H.Root, pki.RoleRoot, 2, 1}, {f.H.Brand, pki.RoleBrand, 1, 2},
		{f.H.CCA, pki.RoleCCA, 0, 3}, {f.H.MCA, pki.RoleMCA, 0, 3}, {f.H.PCA, pki.RolePCA, 0, 3},
	}
	for _, w := range want {
		t.Run(w.role.String(), func(t *testing.T) {
			c := w.a.Certificate()
			assert.Equal(t, w.role, w.a.Role())
			r, err := pki.RoleOf(c)
			require.NoError(t, err)
			assert.Equal(t, w.role, r)
			assert.True(t, c.IsCA)
			assert.Equal(t, w.pathLen, c.MaxPathLen)
			assert.Equal(t, w.pathLen == 0, c.MaxPathLenZero)
			assert.Equal(t, pki.CAKeyUsage, c.KeyUsage)
			assert.Len(t, w.a.Chain(), w.depth)
			assert.NotEmpty(t, c.SubjectKeyId)
			assert.Equal(t, f.H.Root.Certificate().Raw, w.a.Chain()[w.depth-1].Raw)
			_, err = f.Verifier.Verify(context.Background(), c, w.a.Chain()[1:], pki.Expect{Role: w.role}, time.Now())
			assert.NoError(t, err)
		})
	}
	// The root key lives on its own token.
	assert.NotNil(t, f.RootKeys.Signer("setpay-root-ca"))
	assert.Nil(t, f.Keys.Signer("setpay-root-ca"))
}

func TestProfiles(t *testing.T) {
	f := catest.New(t)
	is := issueAll(t, f)
	cases := []struct {
		name    string
		cert    *x509.Certificate
		role    pki.Role
		purpose pki.Purpose
		ku      x509.KeyUsage
		cn      string
		issuer  *ca.Authority
	}{
		{"cardholder", is.cardholder, pki.RoleCardholder, pki.PurposeSignature, x509.KeyUsageDigitalSignature, "cardholder:", f.H.CCA},
		{"merchant-sig", is.merchant.Signature, pki.RoleMerchant, pki.PurposeSignature, x509.KeyUsageDigitalSignature, "merchant:shop-42", f.H.MCA},
		{"merchant-kx-rsa", is.merchant.KeyExchange, pki.RoleMerchant, pki.PurposeKeyExchange, x509.KeyUsageKeyEncipherment, "merchant:shop-42", f.H.MCA},
		{"gateway-sig", is.gateway.Signature, pki.RoleGateway, pki.PurposeSignature, x509.KeyUsageDigitalSignature, "gateway:gw-1", f.H.PCA},
		{"gateway-kx-ec", is.gateway.KeyExchange, pki.RoleGateway, pki.PurposeKeyExchange, x509.KeyUsageKeyAgreement, "gateway:gw-1", f.H.PCA},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.ku, c.cert.KeyUsage)
			assert.False(t, c.cert.IsCA)
			assert.True(t, strings.HasPrefix(c.cert.Subject.CommonName, c.cn), c.cert.Subject.CommonName)
			r, err := pki.RoleOf(c.cert)
			require.NoError(t, err)
			assert.Equal(t, c.role, r)
			p, err := pki.PurposeOf(c.cert)
			require.NoError(t, err)
			assert.Equal(t, c.purpose, p)
			assert.Equal(t, 3, c.cert.Version)
			assert.Equal(t, 1, c.cert.SerialNumber.Sign())
			assert.GreaterOrEqual(t, c.cert.SerialNumber.BitLen(), 64)
			assert.Equal(t, c.issuer.Certificate().SubjectKeyId, c.cert.AuthorityKeyId)
			assert.NotEmpty(t, c.cert.SubjectKeyId)
			assert.False(t, c.cert.NotAfter.After(c.issuer.Certificate().NotAfter))
			chain, err := f.Verify(c.cert, pki.Expect{Role: c.role, Purpose: c.purpose})
			require.NoError(t, err)
			assert.Len(t, chain, 4)
			rec, err := c.issuer.Store().GetIssued(context.Background(), c.cert.SerialNumber)
			require.NoError(t, err)
			assert.Equal(t, c.cert.Raw, rec.DER)
		})
	}
	assert.Equal(t, is.merchantKX, is.merchant.KeyExchange.PublicKey)
	// The cardholder certificate carries neither the PAN nor anything PAN-shaped.
	assert.NotContains(t, string(is.cardholder.Raw), testPAN)
	assert.NotContains(t, string(is.cardholder.Raw), testPAN[len(testPAN)-4:]+"\x00")
}

// TestOpenSSLVerify exports the hierarchy and CRLs and lets the real openssl
// binary judge every profile, then revokes one certificate.
func TestOpenSSLVerify(t *testing.T) {
	testenv.Tool(t, "openssl")
	ctx := context.Background()
	f := catest.New(t)
	is := issueAll(t, f)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	rootPEM := write("root.pem", pki.EncodePEM(f.H.Root.Certificate()))
	writeCRLs := func() string { return write("crls.pem", pki.EncodeCRLPEM(f.CRLs.All()...)) }
	crls := writeCRLs()
	openssl := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "openssl", args...).CombinedOutput()
		return string(out), err
	}
	leaves := map[string]struct {
		cert  *x509.Certificate
		chain []*x509.Certificate
	}{
		"cardholder":   {is.cardholder, []*x509.Certificate{f.H.CCA.Certificate(), f.H.Brand.Certificate()}},
		"merchant-sig": {is.merchant.Signature, []*x509.Certificate{f.H.MCA.Certificate(), f.H.Brand.Certificate()}},
		"merchant-kx":  {is.merchant.KeyExchange, []*x509.Certificate{f.H.MCA.Certificate(), f.H.Brand.Certificate()}},
		"gateway-sig":  {is.gateway.Signature, []*x509.Certificate{f.H.PCA.Certificate(), f.H.Brand.Certificate()}},
		"gateway-kx":   {is.gateway.KeyExchange, []*x509.Certificate{f.H.PCA.Certificate(), f.H.Brand.Certificate()}},
	}
	verify := func(name string) (string, error) {
		l := leaves[name]
		chain := write(name+"-chain.pem", pki.EncodePEM(l.chain...))
		leaf := write(name+".pem", pki.EncodePEM(l.cert))
		return openssl("verify", "-x509_strict", "-crl_check_all", "-CAfile", rootPEM, "-untrusted", chain, "-CRLfile", crls, leaf)
	}
	for name := range leaves {
		out, err := verify(name)
		require.NoError(t, err, "%s: %s", name, out)
		assert.Contains(t, out, ": OK", name)
	}
	for _, a := range f.H.Authorities() {
		crl, err := f.CRLs.CRL(ctx, a.Certificate())
		require.NoError(t, err)
		out, err := openssl("crl", "-noout", "-text", "-in", write(a.Role().String()+"-crl.pem", pki.EncodeCRLPEM(crl)))
		require.NoError(t, err, out)
		assert.Contains(t, out, "X509v3 CRL Number")
		assert.Contains(t, out, "Next Update")
	}

	// Revoke the merchant signature certificate and publish new CRLs.
	require.NoError(t, f.H.MCA.Revoke(ctx, is.merchant.Signature.SerialNumber, ca.RevokeKeyCompromise))
	f.PublishCRLs(t)
	crls = writeCRLs()
	out, err := verify("merchant-sig")
	assert.Error(t, err)
	assert.Contains(t, out, "certificate revoked")
	_, err = f.Verify(is.merchant.Signature, pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature})
	assert.ErrorIs(t, err, pki.ReasonRevoked)
	mcaCRL, err := f.CRLs.CRL(ctx, f.H.MCA.Certificate())
	require.NoError(t, err)
	out, err = openssl("crl", "-noout", "-text", "-in", write("mca-crl2.pem", pki.EncodeCRLPEM(mcaCRL)))
	require.NoError(t, err, out)
	assert.Contains(t, out, strings.ToUpper(is.merchant.Signature.SerialNumber.Text(16)))
	assert.Contains(t, out, "Key Compromise")
	// The other merchant certificate stays good for both.
	out, err = verify("merchant-kx")
	assert.NoError(t, err, out)
	_, err = f.Verify(is.merchant.KeyExchange, pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeKeyExchange})
	assert.NoError(t, err)
}

func TestCRLNumbersIncrease(t *testing.T) {
	f := catest.New(t)
	ctx := context.Background()
	prev := big.NewInt(0)
	for i := 0; i < 3; i++ {
		crl, err := f.H.PCA.CRL(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, crl.Number.Cmp(prev))
		prev = crl.Number
		assert.True(t, crl.NextUpdate.After(crl.ThisUpdate))
		assert.Equal(t, f.H.PCA.Certificate().SubjectKeyId, crl.AuthorityKeyId)
		require.NoError(t, crl.CheckSignatureFrom(f.H.PCA.Certificate()))
	}
}

func TestRevokeErrors(t *testing.T) {
	f := catest.New(t)
	ctx := context.Background()
	is := issueAll(t, f)
	serial := is.gateway.Signature.SerialNumber
	assert.ErrorIs(t, f.H.MCA.Revoke(ctx, serial, ca.RevokeKeyCompromise), ca.ReasonUnknownSerial, "MCA did not issue a gateway cert")
	assert.ErrorIs(t, f.H.PCA.Revoke(ctx, serial, 7), ca.ReasonBadRequest)
	assert.ErrorIs(t, f.H.PCA.Revoke(ctx, serial, ca.RevokeCertificateHold), ca.ReasonBadRequest)
	require.NoError(t, f.H.PCA.Revoke(ctx, serial, ca.RevokeSuperseded))
	assert.ErrorIs(t, f.H.PCA.Revoke(ctx, serial, ca.RevokeSuperseded), ca.ReasonAlreadyRevoked)
}

// softKey returns software keys for the key-policy table only: the token
// cannot make the disallowed keys these cases need.
func softKey(t *testing.T, kind string) crypto.Signer {
	t.Helper()
	var k crypto.Signer
	var err error
	switch kind {
	case "rsa1024":
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	case "p224":
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "p521":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	}
	require.NoError(t, err)
	return k
}

func TestIssueRefusals(t *testing.T) {
	f := catest.New(t)
	ctx := context.Background()
	good := catest.CSR(t, f.Key(t, pki.AlgECDSAP256, hsm.UsageSign), "x")
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-5] ^= 0x01 // inside the ECDSA signature
	nonce, err := f.H.CCA.NewCANonce()
	require.NoError(t, err)
	cardholder := func(a *ca.Authority, csr []byte) error {
		_, err := a.IssueCardholder(ctx, ca.CardholderRequest{CSR: csr, PAN: testPAN, Expiry: testExpiry, WalletSecret: walletSecret(t), CANonce: nonce})
		return err
	}
	cases := []struct {
		name string
		err  error
		want ca.Reason
	}{
		{"bad CSR signature", cardholder(f.H.CCA, badSig), ca.ReasonBadProofOfPossession},
		{"garbage CSR", cardholder(f.H.CCA, []byte{0x30, 0x03, 0x02, 0x01, 0x01}), ca.ReasonBadCSR},
		{"RSA-1024", cardholder(f.H.CCA, catest.CSR(t, softKey(t, "rsa1024"), "x")), ca.ReasonKeyNotAllowed},
		{"P-224", cardholder(f.H.CCA, catest.CSR(t, softKey(t, "p224"), "x")), ca.ReasonKeyNotAllowed},
		{"P-521", cardholder(f.H.CCA, catest.CSR(t, softKey(t, "p521"), "x")), ca.ReasonKeyNotAllowed},
		{"Ed25519", cardholder(f.H.CCA, catest.CSR(t, softKey(t, "ed25519"), "x")), ca.ReasonKeyNotAllowed},
		{"MCA issuing cardholder", cardholder(f.H.MCA, good), ca.ReasonRoleNotAllowed},
		{"cardholder asking CCA for merchant role", func() error {
			_, err := f.H.CCA.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleMerchant, ID: "m", Secret: "s", SignatureCSR: good, KeyExchangeCSR: good})
			return err
		}(), ca.ReasonRoleNotAllowed},
		{"MCA issuing gateway", func() error {
			_, err := f.H.MCA.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleGateway, ID: "g", Secret: "s", SignatureCSR: good, KeyExchangeCSR: good})
			return err
		}(), ca.ReasonRoleNotAllowed},
		{"brand issuing cardholder", cardholder(f.H.Brand, good), ca.ReasonRoleNotAllowed},
		{"CCA issuing a CA", func() error {
			_, err := f.H.CCA.IssueSubordinateCA(ctx, ca.CARequest{Role: pki.RoleMCA, CommonName: "x", CSR: good, Validity: time.Hour})
			return err
		}(), ca.ReasonRoleNotAllowed},
		{"root issuing MCA directly", func() error {
			_, err := f.H.Root.IssueSubordinateCA(ctx, ca.CARequest{Role: pki.RoleMCA, CommonName: "x", CSR: good, Validity: time.Hour})
			return err
		}(), ca.ReasonRoleNotAllowed},
		{"MCA enrolling a gateway", func() error { _, err := f.H.MCA.Enroll(ctx, pki.RoleGateway, "g"); return err }(), ca.ReasonRoleNotAllowed},
		{"invalid PAN", func() error {
			_, err := f.H.CCA.IssueCardholder(ctx, ca.CardholderRequest{CSR: good, PAN: "4111111111111112", Expiry: testExpiry, WalletSecret: walletSecret(t), CANonce: nonce})
			return err
		}(), ca.ReasonBadRequest},
		{"expired card", func() error {
			_, err := f.H.CCA.IssueCardholder(ctx, ca.CardholderRequest{CSR: good, PAN: testPAN, Expiry: "202001", WalletSecret: walletSecret(t), CANonce: nonce})
			return err
		}(), ca.ReasonBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Error(t, c.err)
			assert.ErrorIs(t, c.err, c.want, c.err.Error())
			assert.NotContains(t, c.err.Error(), "4111111111111112")
			assert.NotContains(t, c.err.Error(), testPAN)
		})
	}
}

func TestEnrollment(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewManual(time.Now())
	f := catest.New(t)
	// A second Authority over the MCA's token key and certificate, with a
	// clock the test moves.
	mca, err := ca.NewAuthority(ca.Config{
		Signer: f.Keys.Signer("setpay-mca"), Certificate: f.H.MCA.Certificate(),
		Chain: f.H.MCA.Chain()[1:], Clock: clk.Now,
		EnrollmentTTL: time.Hour,
	})
	require.NoError(t, err)

	csrs := func() (sig, kx []byte) {
		return catest.CSR(t, f.Key(t, pki.AlgECDSAP256, hsm.UsageSign), "m"),
			catest.CSR(t, f.Key(t, pki.AlgECDSAP384, hsm.UsageSign), "m")
	}
	issue := func(id, secret string) error {
		sig, kx := csrs()
		_, err := mca.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleMerchant, ID: id, Secret: secret, SignatureCSR: sig, KeyExchangeCSR: kx})
		return err
	}

	secret, err := mca.Enroll(ctx, pki.RoleMerchant, "shop-1")
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(secret), 43)

	assert.ErrorIs(t, issue("shop-1", secret+"x"), ca.ReasonEnrollmentInvalid, "wrong secret")
	assert.ErrorIs(t, issue("shop-2", secret), ca.ReasonEnrollmentInvalid, "secret of another id")
	assert.ErrorIs(t, issue("shop-1", ""), ca.ReasonEnrollmentInvalid, "no secret")
	require.NoError(t, issue("shop-1", secret))
	assert.ErrorIs(t, issue("shop-1", secret), ca.ReasonEnrollmentUsed, "re-used secret")

	sec2, err := mca.Enroll(ctx, pki.RoleMerchant, "shop-3")
	require.NoError(t, err)
	clk.Add(time.Hour + time.Second)
	assert.ErrorIs(t, issue("shop-3", sec2), ca.ReasonEnrollmentExpired)

	// A bad CSR does not burn the secret.
	sec4, err := mca.Enroll(ctx, pki.RoleMerchant, "shop-4")
	require.NoError(t, err)
	_, err = mca.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleMerchant, ID: "shop-4", Secret: sec4, SignatureCSR: []byte("junk"), KeyExchangeCSR: []byte("junk")})
	assert.ErrorIs(t, err, ca.ReasonBadCSR)
	require.NoError(t, issue("shop-4", sec4))
}

func TestEnrollmentStoredHashed(t *testing.T) {
	ctx := context.Background()
	store := ca.NewMemStore()
	f := catest.New(t)
	mca, err := ca.NewAuthority(ca.Config{Signer: f.Keys.Signer("setpay-mca"), Certificate: f.H.MCA.Certificate(), Chain: f.H.MCA.Chain()[1:], Store: store})
	require.NoError(t, err)
	secret, err := mca.Enroll(ctx, pki.RoleMerchant, "shop-9")
	require.NoError(t, err)
	_, err = store.RedeemEnrollment(ctx, pki.RoleMerchant, "shop-9", []byte(secret), time.Now())
	assert.ErrorIs(t, err, ca.ErrSecretMismatch, "the plain secret is not what is stored")
}

func TestKeyExchangeProofRefusals(t *testing.T) {
	f := catest.New(t)
	ctx := context.Background()
	kx := f.Key(t, pki.AlgRSA2048, hsm.UsageKeyExchange)
	other := f.Key(t, pki.AlgRSA2048, hsm.UsageKeyExchange)
	spki, err := x509.MarshalPKIXPublicKey(kx.Public())
	require.NoError(t, err)
	sig := catest.CSR(t, f.Key(t, pki.AlgECDSAP256, hsm.UsageSign), "g")

	ch, err := f.H.PCA.KeyExchangeChallenge(ctx, pki.RoleGateway, "gw-9", spki)
	require.NoError(t, err)
	// Someone without kx cannot answer: another key fails to open the challenge.
	_, err = pki.AnswerKXChallenge(ctx, ch, other)
	assert.Error(t, err)
	secret, err := f.H.PCA.Enroll(ctx, pki.RoleGateway, "gw-9")
	require.NoError(t, err)
	_, err = f.H.PCA.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleGateway, ID: "gw-9", Secret: secret, SignatureCSR: sig, KeyExchangeKey: spki, KeyExchangeProof: make([]byte, 32)})
	assert.ErrorIs(t, err, ca.ReasonBadProofOfPossession, "wrong answer")

	// The challenge was consumed by the failed attempt: even the right answer is refused now.
	right, err := pki.AnswerKXChallenge(ctx, ch, kx)
	require.NoError(t, err)
	_, err = f.H.PCA.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleGateway, ID: "gw-9", Secret: secret, SignatureCSR: sig, KeyExchangeKey: spki, KeyExchangeProof: right})
	assert.ErrorIs(t, err, ca.ReasonBadProofOfPossession, "challenge is single use")

	// Fresh challenge, right answer: issued.
	ch, err = f.H.PCA.KeyExchangeChallenge(ctx, pki.RoleGateway, "gw-9", spki)
	require.NoError(t, err)
	right, err = pki.AnswerKXChallenge(ctx, ch, kx)
	require.NoError(t, err)
	certs, err := f.H.PCA.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleGateway, ID: "gw-9", Secret: secret, SignatureCSR: sig, KeyExchangeKey: spki, KeyExchangeProof: right})
	require.NoError(t, err)
	assert.Equal(t, x509.KeyUsageKeyEncipherment, certs.KeyExchange.KeyUsage)
}

func TestValidityClampedToIssuer(t *testing.T) {
	f := catest.New(t)
	ctx := context.Background()
	secret, err := f.H.PCA.Enroll(ctx, pki.RoleGateway, "gw-long")
	require.NoError(t, err)
	certs, err := f.H.PCA.IssueEntity(ctx, ca.EntityRequest{
		Role: pki.RoleGateway, ID: "gw-long", Secret: secret, Validity: 100 * 365 * 24 * time.Hour,
		SignatureCSR:   catest.CSR(t, f.Key(t, pki.AlgECDSAP256, hsm.UsageSign), "g"),
		KeyExchangeCSR: catest.CSR(t, f.Key(t, pki.AlgRSA2048, hsm.UsageSign), "g"),
	})
	require.NoError(t, err)
	assert.Equal(t, f.H.PCA.Certificate().NotAfter, certs.Signature.NotAfter)
	assert.Equal(t, x509.KeyUsageKeyEncipherment, certs.KeyExchange.KeyUsage, "RSA key-exchange via CSR")
	assert.NotEqual(t, 0, certs.Signature.SerialNumber.Cmp(certs.KeyExchange.SerialNumber))
}

func TestConcurrentIssuance(t *testing.T) {
	f := catest.New(t)
	ctx := context.Background()
	const n = 6
	csrs := make([][]byte, n)
	for i := range csrs {
		csrs[i] = catest.CSR(t, f.Key(t, pki.AlgECDSAP256, hsm.UsageSign), "c")
	}
	certs := make([]*x509.Certificate, n)
	errs := make([]error, n)
	done := make(chan int)
	for i := 0; i < n; i++ {
		go func(i int) {
			defer func() { done <- i }()
			nonce, err := f.H.CCA.NewCANonce()
			if err != nil {
				errs[i] = err
				return
			}
			secret := make([]byte, 32)
			if _, err := rand.Read(secret); err != nil {
				errs[i] = err
				return
			}
			certs[i], errs[i] = f.H.CCA.IssueCardholder(ctx, ca.CardholderRequest{CSR: csrs[i], PAN: testPAN, Expiry: testExpiry, WalletSecret: secret, CANonce: nonce})
		}(i)
	}
	for i := 0; i < n; i++ {
		<-done
	}
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		require.NoError(t, errs[i])
		assert.False(t, seen[certs[i].SerialNumber.String()], "unique serials")
		seen[certs[i].SerialNumber.String()] = true
		// Same card, different secrets: unlinkable cardholder ids.
		assert.False(t, seen[certs[i].Subject.CommonName])
		seen[certs[i].Subject.CommonName] = true
	}
	// The revocation list is consistent after concurrent issuance.
	require.NoError(t, f.H.CCA.Revoke(ctx, certs[0].SerialNumber, ca.RevokeCessationOfOperation))
	crl, err := f.H.CCA.CRL(ctx)
	require.NoError(t, err)
	require.Len(t, crl.RevokedCertificateEntries, 1)
	assert.Equal(t, 0, crl.RevokedCertificateEntries[0].SerialNumber.Cmp(certs[0].SerialNumber))
	assert.Equal(t, ca.RevokeCessationOfOperation, crl.RevokedCertificateEntries[0].ReasonCode)
}
