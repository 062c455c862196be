package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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

// fuzzCA answers every cardholder RPC with the fuzzer's bytes, to exercise
// the wallet's parsing of CA answers.
type fuzzCA struct {
	capb.UnimplementedCAServer
	init, form, res []byte
}

func (f *fuzzCA) CardCInit(context.Context, *capb.CardCInitRequest) (*capb.CardCInitResponse, error) {
	return &capb.CardCInitResponse{Signed: f.init}, nil
}

func (f *fuzzCA) RegFormReq(context.Context, *capb.RegFormRequest) (*capb.RegFormResponse, error) {
	return &capb.RegFormResponse{Signed: f.form}, nil
}

func (f *fuzzCA) CertReq(context.Context, *capb.CertReqRequest) (*capb.CertReqResponse, error) {
	return &capb.CertReqResponse{Signed: f.res}, nil
}

func FuzzClientAnswers(f *testing.F) {
	e := newRegEnv(f)
	ctx := context.Background()
	init, err := e.srv.CardCInit(ctx, &capb.CardCInitRequest{WalletNonce: make([]byte, 32)})
	if err != nil {
		f.Fatal(err)
	}
	form, err := e.srv.RegFormReq(ctx, &capb.RegFormRequest{Bin: "411111"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(init.Signed, form.Signed, []byte{0x30})
	fake := &fuzzCA{}
	g := grpc.NewServer()
	capb.RegisterCAServer(g, fake)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	f.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = conn.Close() })
	client, err := ca.NewClient(conn, e.h.Root.Certificate(), nil)
	if err != nil {
		f.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		// Not concurrent: one fuzz worker runs one input at a time.
		fake.init, fake.form, fake.res = a, b, c
		_, err := client.RegisterCardholder(ctx, ca.CardholderRegistration{PAN: cardOK, Expiry: cardExpiry, Key: key})
		if err == nil {
			t.Fatal("registration succeeded on fuzzed answers")
		}
	})
}
