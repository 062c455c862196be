package ca_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/ca/capb"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/pki"
)

// The service's parsers take untrusted bytes; each must answer with a status,
// never panic. Seeds are real requests.

func FuzzCertReq(f *testing.F) {
	e := newRegEnv(f)
	key := walletKey(f, e)
	f.Add(e.buildCertReq(f, certReq{pan: cardOK, expiry: cardExpiry, postal: postalCode, key: key}))
	f.Add([]byte{0x30, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = e.srv.CertReq(context.Background(), &capb.CertReqRequest{Signed: b})
	})
}

func FuzzRenewRevoke(f *testing.F) {
	e := newRegEnv(f)
	ctx := context.Background()
	secret, err := e.h.PCA.Enroll(ctx, pki.RoleGateway, "fz")
	if err != nil {
		f.Fatal(err)
	}
	sig, kx := tokenEntity(f, e, hsm.RSA2048)
	res, err := e.client.RegisterEntity(ctx, ca.EntityRegistration{Role: pki.RoleGateway, ID: "fz", Secret: secret, SignatureKey: sig, KeyExchangeKey: kx})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed(f, ca.ContentTypeRenew, &capb.RenewTBS{Csr: []byte("x")}, sig, res.Signature))
	f.Add(signed(f, ca.ContentTypeRevoke, &capb.RevokeTBS{Serial: []byte{1}, Reason: 1}, sig, res.Signature))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = e.srv.Renew(ctx, &capb.RenewRequest{Signed: b})
		_, _ = e.srv.Revoke(ctx, &capb.RevokeRequest{Signed: b})
	})
}

func FuzzEntityCertReq(f *testing.F) {
	e := newRegEnv(f)
	sig, _ := tokenEntity(f, e, hsm.RSA2048)
	f.Add("merchant", "shop-1", "secret", csrOf(f, sig), []byte(nil), []byte{0x30, 0})
	f.Fuzz(func(t *testing.T, role, id, secret string, csr, kxKey, proof []byte) {
		_, _ = e.srv.KeyExchangeChallenge(context.Background(), &capb.KeyExchangeChallengeRequest{Role: role, Id: id, PublicKey: kxKey})
		_, _ = e.srv.EntityCertReq(context.Background(), &capb.EntityCertRequest{Role: role, Id: id, Secret: secret,
			SignatureCsr: csr, KeyExchangeCsr: csr, KeyExchangeKey: kxKey, KeyExchangeProof: proof})
	})
}

func FuzzPendingFile(f *testing.F) {
	f.Add([]byte(`{"id":"0123456789abcdef0123456789abcdef","state":"pending","accepted":{"Role":7,"ID":"m"}}`))
	f.Add([]byte(`{}`))
	dir := f.TempDir()
	q, err := ca.NewPendingQueue(dir)
	if err != nil {
		f.Fatal(err)
	}
	const id = "0123456789abcdef0123456789abcdef"
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, id+".json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = q.Get(id)
	})
}

func csrOf(t testing.TB, k interface {
	Public() crypto.PublicKey
	Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error)
}) []byte {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
