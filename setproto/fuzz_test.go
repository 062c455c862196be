package setproto_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
)

// Seeds are real messages made with software keys (the parsers do not care where a
// key lives; the end-to-end tests use token keys).
func seeds(t testing.TB) (party setproto.Party, kxCert *x509.Certificate, kxKey *rsa.PrivateKey, msgs map[string][]byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "merchant:shop-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	kxKey, err = rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	tmpl.KeyUsage, tmpl.SerialNumber = x509.KeyUsageKeyEncipherment, big.NewInt(2)
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, kxKey.Public(), key)
	require.NoError(t, err)
	kxCert, err = x509.ParseCertificate(der)
	require.NoError(t, err)
	party = setproto.Party{Key: key, Cert: cert}
	h := setproto.Hash([]byte("x"))
	ch := make([]byte, 32)
	msgs = map[string][]byte{}
	oi := &setpb.OrderInfo{Xid: "xid-1", Rrpid: "rr-1", ChallEc: ch, ChallM: ch, MerchantId: "shop-1", Brand: "SETPay", OdHash: h, Amount: 100, Currency: "EUR", Nonce: h,
		GatewayId: "gw-1", GatewayKxThumbprint: h, OfferId: "book"}
	pi := &setpb.PaymentInstructions{Xid: "xid-1", Rrpid: "rr-1", MerchantId: "shop-1", Pan: "4111111111111111", Expiry: "203012", PanSecret: h, Amount: 100, Currency: "EUR", OiHash: h, Nonce: h,
		GatewayId: "gw-1", GatewayKxThumbprint: h}
	for name, m := range map[string]proto.Message{
		"pinitreq": &setpb.PInitReq{Rrpid: "rr-1", Brand: "SETPay", Language: "en", ChallEc: ch, OfferId: "book"},
		"pinitres": &setpb.PInitRes{Xid: "xid-1", Rrpid: "rr-1", ChallEc: ch, ChallM: ch, MerchantId: "shop-1", Brand: "SETPay", GatewayId: "gw-1", GatewayKxThumbprint: h, OrderDescription: "book", Amount: 100, Currency: "EUR"},
		"oi":       oi,
		"pi":       pi,
		"preq":     &setpb.PurchaseRequest{OrderInfo: []byte{1}, PiHash: h, PiEnvelope: []byte{1}, DualSignature: []byte{1}},
		"pres":     &setpb.PurchaseResponse{Xid: "xid-1", Rrpid: "rr-1", ChallEc: ch, Result: setpb.AuthResult_APPROVED, AuthCode: "123456", Amount: 100, Currency: "EUR"},
		"authreq":  &setpb.AuthRequest{Xid: "xid-1", Rrpid: "rr-1", ChallM: ch, MerchantId: "shop-1", Amount: 100, Currency: "EUR", OiHash: h, PiEnvelope: []byte{1}, DualSignature: []byte{1}, MerchantKxThumbprint: h},
		"authres":  &setpb.AuthResponse{Xid: "xid-1", Rrpid: "rr-1", ChallM: ch, MerchantId: "shop-1", Result: setpb.AuthResult_APPROVED, AuthorizedAmount: 100, Currency: "EUR"},
		"token":    &setpb.CaptureToken{TokenId: "t-1", Xid: "xid-1", MerchantId: "shop-1", Amount: 100, Currency: "EUR", AuthCode: "123456"},
		"inqreq":   &setpb.InquiryRequest{Xid: "xid-1", Rrpid: "rr-1", ChallEc: ch},
		"inqres":   &setpb.InquiryResponse{Xid: "xid-1", Rrpid: "rr-1", ChallEc: ch, State: "authorized", Amount: 100, Currency: "EUR"},
		"stored":   &setpb.StoredAnswer{Error: &setpb.ErrorDetail{Reason: setpb.Reason_REPLAY}},
	} {
		b, err := setproto.Marshal(m)
		require.NoError(t, err)
		msgs[name] = b
	}
	sd, err := setproto.DualSign(party, h, h, time.Now())
	require.NoError(t, err)
	msgs["dual"] = sd
	env, err := setproto.Seal(setpb.ContentKind_PAYMENT_INSTRUCTIONS, msgs["pi"], kxCert, setproto.EnvelopeOptions{})
	require.NoError(t, err)
	msgs["envelope"] = env
	return party, kxCert, kxKey, msgs
}

func FuzzParsers(f *testing.F) {
	_, _, _, msgs := seeds(f)
	for _, m := range msgs {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = setproto.ParsePInitReq(b)
		_, _ = setproto.ParsePInitRes(b)
		_, _ = setproto.ParseOrderInfo(b)
		_, _ = setproto.ParsePaymentInstructions(b)
		_, _ = setproto.ParsePurchaseRequest(b)
		_, _ = setproto.ParsePurchaseResponse(b)
		_, _ = setproto.ParseAuthRequest(b)
		_, _ = setproto.ParseAuthResponse(b)
		_, _ = setproto.ParseCaptureToken(b)
		_, _ = setproto.ParseInquiryRequest(b)
		_, _ = setproto.ParseInquiryResponse(b)
		_, _ = setproto.ParseStoredAnswer(b)
		_, _, _ = setproto.SplitDualContent(b)
	})
}

func FuzzOpenSigned(f *testing.F) {
	party, _, _, msgs := seeds(f)
	f.Add(msgs["dual"])
	root := selfSignedRoot(f)
	v, err := pki.NewVerifier(root, pki.NewMemoryCRLs())
	require.NoError(f, err)
	trust := &setproto.Trust{Verifier: v, Cache: pki.NewCertCache(8)}
	trust.Cache.Add(party.Cert)
	tp := pki.ThumbprintOf(party.Cert)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = trust.Open(context.Background(), b, [][]byte{tp[:]}, setpb.ContentKind_DUAL_SIGNATURE, pki.Expect{Role: pki.RoleCardholder, Purpose: pki.PurposeSignature})
		_, _ = trust.VerifyDual(context.Background(), b, make([]byte, 32), make([]byte, 32))
	})
}

func FuzzUnseal(f *testing.F) {
	_, kxCert, kxKey, msgs := seeds(f)
	f.Add(msgs["envelope"])
	two, err := cms.Encrypt(msgs["pi"], cms.EncryptOptions{Recipients: []*x509.Certificate{kxCert, kxCert},
		ContentType: setproto.ContentType(setpb.ContentKind_PAYMENT_INSTRUCTIONS), Cipher: cms.AES256GCM})
	require.NoError(f, err)
	f.Add(two)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, errOpen := setproto.Unseal(b, setpb.ContentKind_PAYMENT_INSTRUCTIONS, kxCert, kxKey)
		errSole := setproto.CheckSoleRecipient(b, setpb.ContentKind_PAYMENT_INSTRUCTIONS, kxCert)
		if errOpen == nil && errSole != nil {
			t.Fatalf("Unseal opened an envelope CheckSoleRecipient refuses: %v", errSole)
		}
	})
}

func selfSignedRoot(t testing.TB) *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "root"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: pki.CAKeyUsage,
		Policies: pki.Policies(pki.RoleRoot, pki.PurposeNone)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}
