package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/ca/capb"
	"github.com/setpay/setpay/ca/catest"
	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/store"
)

// Demo cards of the ledger (test numbers, Luhn-valid).
const (
	cardOK      = "4111111111111111"
	cardBlocked = "4012888888881881"
	cardExpired = "5555555555554444"
	cardUnknown = "4000056655665556"
	cardExpiry  = "209912"
	postalCode  = "75001"
)

// countingStore counts issued certificates so refusals can be shown to issue nothing.
type countingStore struct {
	ca.Store
	n *atomic.Int64
}

func (c countingStore) PutIssued(ctx context.Context, rec ca.IssuedCert) error {
	c.n.Add(1)
	return c.Store.PutIssued(ctx, rec)
}

type regEnv struct {
	h       *ca.Hierarchy
	keys    *catest.TokenKeys
	db      *store.Store
	issued  *atomic.Int64
	cca     *x509.Certificate
	ccaKX   *x509.Certificate
	otherKX *x509.Certificate // the MCA's key-exchange certificate: "another CA"
	srv     *ca.Server
	client  *ca.Client
	raw     capb.CAClient
}

func newRegEnv(t testing.TB, opts ...func(*ca.ServerConfig)) *regEnv {
	t.Helper()
	ctx := context.Background()
	e := &regEnv{keys: catest.NewTokenKeys(t), issued: new(atomic.Int64)}
	e.db = openDB(t, "sqlite:"+filepath.Join(t.TempDir(), "setpay.db"))
	var err error
	e.h, err = ca.BuildHierarchy(ctx, ca.HierarchyConfig{
		RootKeys: catest.NewTokenKeys(t), Keys: e.keys, Org: "SETPay Test", Brand: "SETPay Test",
		Logger: slog.New(slog.DiscardHandler),
		NewStore: func(r pki.Role) ca.Store {
			s, err := ca.NewDBStore(e.db, r.String())
			require.NoError(t, err)
			return countingStore{Store: s, n: e.issued}
		},
	})
	require.NoError(t, err)
	e.cca = e.h.CCA.Certificate()

	kx, err := e.keys.Token.GenerateKey(ctx, hsm.KeySpec{Label: "setpay-cca-kx", Algorithm: hsm.RSA2048, Usage: hsm.UsageKeyExchange})
	require.NoError(t, err)
	e.ccaKX, err = e.h.Brand.IssueCAKeyExchange(ctx, e.cca, kx.Public(), 0)
	require.NoError(t, err)
	other, err := e.keys.Token.GenerateKey(ctx, hsm.KeySpec{Label: "setpay-mca-kx", Algorithm: hsm.RSA2048, Usage: hsm.UsageKeyExchange})
	require.NoError(t, err)
	e.otherKX, err = e.h.Brand.IssueCAKeyExchange(ctx, e.h.MCA.Certificate(), other.Public(), 0)
	require.NoError(t, err)

	ledger, err := ca.NewCardLedger([]ca.LedgerCard{
		{PAN: cardOK, Expiry: cardExpiry, PostalCode: postalCode},
		{PAN: cardBlocked, Expiry: cardExpiry, PostalCode: postalCode, Blocked: true},
		{PAN: cardExpired, Expiry: "202001", PostalCode: postalCode},
	})
	require.NoError(t, err)
	cfg := ca.ServerConfig{Hierarchy: e.h, CCASigner: e.keys.Signer("setpay-cca"),
		CCAKeyExchange: e.ccaKX, CCADecrypter: kx, Ledger: ledger, Logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&cfg)
	}
	e.srv, err = ca.NewServer(cfg)
	require.NoError(t, err)

	// TLS 1.3, server authentication only, TLS keys in the token.
	tlsCAKey, err := e.keys.Token.GenerateKey(ctx, hsm.KeySpec{Label: "tls-ca", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	tlsKey, err := e.keys.Token.GenerateKey(ctx, hsm.KeySpec{Label: "tls", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	iss, err := tlsrpc.NewTLSIssuer("CA TLS", tlsCAKey, time.Hour)
	require.NoError(t, err)
	id, err := iss.Issue("127.0.0.1", tlsKey, time.Hour)
	require.NoError(t, err)
	g, _ := tlsrpc.NewGRPCServer(ca.ServerTLSConfig(id), 2*ca.MaxRequestSize)
	e.srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: iss.Pool(), ServerName: "127.0.0.1"})))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	e.raw = capb.NewCAClient(conn)
	e.client, err = ca.NewClient(conn, e.h.Root.Certificate(), nil)
	require.NoError(t, err)
	return e
}

func walletKey(t testing.TB, e *regEnv) crypto.Signer {
	t.Helper()
	k, err := e.keys.Token.GenerateKey(context.Background(), hsm.KeySpec{Label: "wallet-" + randHex(t), Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	return k
}

func randHex(t testing.TB) string { return uniqueIssuer(t) }

// assertRefused checks code and reason of a gRPC refusal.
func assertRefused(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	require.Error(t, err)
	assert.Equal(t, code, status.Code(err), "%v", err)
	assert.Equal(t, reason, ca.RefusalReason(err), "%v", err)
	assert.NotContains(t, err.Error(), cardOK)
	assert.NotContains(t, err.Error(), cardUnknown)
}

func TestCardholderRegistration(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	key := walletKey(t, e)
	before := e.issued.Load()
	res, err := e.client.RegisterCardholder(ctx, ca.CardholderRegistration{PAN: cardOK, Expiry: cardExpiry,
		Fields: map[string]string{"postal_code": postalCode}, Key: key})
	require.NoError(t, err)
	assert.Equal(t, before+1, e.issued.Load())
	assert.NoError(t, pki.CheckCardholderPAN(res.Cert, cardOK, cardExpiry, res.PANSecret))
	assert.NotContains(t, string(res.Cert.Raw), cardOK)
	rec, err := e.h.CCA.Store().GetIssued(ctx, res.Cert.SerialNumber)
	require.NoError(t, err)
	assert.Equal(t, pki.RoleCardholder, rec.Role)
	assert.Equal(t, "std-v1", res.Form.FormId)
	// The CCA key-exchange certificate passes the dedicated check and is refused
	// by the ordinary verifier as a leaf of any kind.
	require.NoError(t, ca.VerifyCAKeyExchange(ctx, e.client.Verifier(), e.client.CRLs(), e.ccaKX, e.cca, []*x509.Certificate{e.h.Brand.Certificate()}, time.Now()))
	_, err = e.client.Verifier().Verify(ctx, e.ccaKX, []*x509.Certificate{e.h.Brand.Certificate()}, pki.Expect{Role: pki.RoleCCA}, time.Now())
	assert.Error(t, err)
	assert.Error(t, ca.VerifyCAKeyExchange(ctx, e.client.Verifier(), e.client.CRLs(), e.cca, e.cca, []*x509.Certificate{e.h.Brand.Certificate()}, time.Now()))
}

// certReq builds a CertReq by hand so tests can break one thing at a time.
type certReq struct {
	pan, expiry, postal string
	key                 crypto.Signer // CSR key
	reqKey              crypto.Signer // request signer; nil: key
	recipient           *x509.Certificate
	breakCSR            bool
	nonce               []byte
	formID              string
	// envelope, if set, seals the AccountInfo instead of the client's way.
	envelope func(acct []byte) []byte
}

func signed(t testing.TB, ct uint64, m proto.Message, key crypto.Signer, cert *x509.Certificate) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	if cert == nil {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "k"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		require.NoError(t, err)
		cert, err = x509.ParseCertificate(der)
		require.NoError(t, err)
	}
	out, err := cms.Sign(b, cms.SignOptions{ContentType: cms.ProtocolContentType(ct), Signer: key, Certificate: cert,
		Certificates: []*x509.Certificate{cert}, SigningTime: time.Now()})
	require.NoError(t, err)
	return out
}

func (e *regEnv) form(t testing.TB) *capb.RegFormTBS {
	res, err := e.raw.RegFormReq(context.Background(), &capb.RegFormRequest{Bin: "411111"})
	require.NoError(t, err)
	sd, err := cms.ParseSignedData(res.Signed)
	require.NoError(t, err)
	_, err = sd.Verify(cms.VerifyOptions{Certificates: []*x509.Certificate{e.cca}})
	require.NoError(t, err)
	var f capb.RegFormTBS
	require.NoError(t, proto.Unmarshal(sd.Content(), &f))
	return &f
}

func (e *regEnv) buildCertReq(t testing.TB, r certReq) []byte {
	t.Helper()
	if r.nonce == nil {
		f := e.form(t)
		r.nonce, r.formID = f.CaNonce, f.FormId
	}
	if r.recipient == nil {
		r.recipient = e.ccaKX
	}
	if r.reqKey == nil {
		r.reqKey = r.key
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "c"}}, r.key)
	require.NoError(t, err)
	if r.breakCSR {
		csr[len(csr)-5] ^= 0xff
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	acct, err := proto.Marshal(&capb.AccountInfo{Pan: r.pan, Expiry: r.expiry, WalletSecret: secret,
		Fields: map[string]string{"postal_code": r.postal}, CaNonce: r.nonce})
	require.NoError(t, err)
	var env []byte
	if r.envelope != nil {
		env = r.envelope(acct)
	} else {
		env, err = cms.Encrypt(acct, cms.EncryptOptions{Recipients: []*x509.Certificate{r.recipient}, ContentType: cms.ProtocolContentType(ca.ContentTypeAccountInfo)})
		require.NoError(t, err)
	}
	return signed(t, ca.ContentTypeCertReq, &capb.CertReqTBS{Csr: csr, Envelope: env, CaNonce: r.nonce, FormId: r.formID}, r.reqKey, nil)
}

func TestCertReqRefusals(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	key := walletKey(t, e)
	other := walletKey(t, e)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	require.NoError(t, err)
	used := e.form(t)
	_, err = e.raw.CertReq(ctx, &capb.CertReqRequest{Signed: e.buildCertReq(t, certReq{pan: cardOK, expiry: cardExpiry, postal: postalCode, key: key, nonce: used.CaNonce, formID: used.FormId})})
	require.NoError(t, err)
	start := e.issued.Load()

	tests := []struct {
		name   string
		req    func() []byte
		code   codes.Code
		reason string
	}{
		{"CSR signature does not match", func() []byte {
			return e.buildCertReq(t, certReq{pan: cardOK, expiry: cardExpiry, postal: postalCode, key: key, breakCSR: true})
		}, codes.PermissionDenied, "BAD_PROOF_OF_POSSESSION"},
		{"request signed by another key", func() []byte {
			return e.buildCertReq(t, certReq{pan: cardOK, expiry: cardExpiry, postal: postalCode, key: key, reqKey: other})
		}, codes.PermissionDenied, "BAD_PROOF_OF_POSSESSION"},
		{"PAN unknown to the issuer", func() []byte {
			return e.buildCertReq(t, certReq{pan: cardUnknown, expiry: cardExpiry, postal: postalCode, key: key})
		}, codes.NotFound, "CARD_UNKNOWN"},
		{"expired card", func() []byte {
			return e.buildCertReq(t, certReq{pan: cardExpired, expiry: "202001", postal: postalCode, key: key})
		}, codes.FailedPrecondition, "CARD_EXPIRED"},
		{"blocked card", func() []byte {
			return e.buildCertReq(t, certReq{pan: cardBlocked, expiry: cardExpiry, postal: postalCode, key: key})
		}, codes.PermissionDenied, "CARD_BLOCKED"},
		{"wrong account data", func() []byte {
			return e.buildCertReq(t, certReq{pan: cardOK, expiry: cardExpiry, postal: "99999", key: key})
		}, codes.PermissionDenied, "CARD_DATA_MISMATCH"},
		{"wrong expiry", func() []byte {
			return e.buildCertReq(t, certReq{pan: cardOK, expiry: "209811", postal: postalCode, key: key})
		}, codes.PermissionDenied, "CARD_DATA_MISMATCH"},
		{"envelope for another CA", func() []byte {
			return e.buildCertReq(t, certReq{pan: cardOK, expiry: cardExpiry, postal: postalCode, key: key, recipient: e.otherKX})
		}, codes.PermissionDenied, "WRONG_RECIPIENT"},
		{"RSA-1024 key", func() []byte {
			return e.buildCertReq(t, certReq{pan: cardOK, expiry: cardExpiry, postal: postalCode, key: rsa1024})
		}, codes.InvalidArgument, "KEY_NOT_ALLOWED"},
		{"P-224 key", func() []byte {
			return e.buildCertReq(t, certReq{pan: cardOK, expiry: cardExpiry, postal: postalCode, key: p224, reqKey: key})
		}, codes.InvalidArgument, "KEY_NOT_ALLOWED"},
		{"nonce already used", func() []byte {
			return e.buildCertReq(t, certReq{pan: cardOK, expiry: cardExpiry, postal: postalCode, key: key, nonce: used.CaNonce, formID: used.FormId})
		}, codes.FailedPrecondition, "NONCE_UNKNOWN"},
		{"garbage", func() []byte { return []byte("\x30\x03garbage") }, codes.InvalidArgument, "BAD_REQUEST"},
		{"empty", func() []byte { return nil }, codes.InvalidArgument, "BAD_REQUEST"},
		{"too large", func() []byte { return make([]byte, ca.MaxRequestSize+1) }, codes.InvalidArgument, "BAD_REQUEST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.raw.CertReq(ctx, &capb.CertReqRequest{Signed: tc.req()})
			assertRefused(t, err, tc.code, tc.reason)
		})
	}
	assert.Equal(t, start, e.issued.Load(), "no refused request issued anything")

	_, err = e.raw.RegFormReq(ctx, &capb.RegFormRequest{Bin: cardOK})
	assertRefused(t, err, codes.InvalidArgument, "BAD_REQUEST")
	_, err = e.raw.CardCInit(ctx, &capb.CardCInitRequest{})
	assertRefused(t, err, codes.InvalidArgument, "BAD_REQUEST")
}

// tokenEntity makes the token keys of a merchant or gateway.
func tokenEntity(t testing.TB, e *regEnv, kxAlg hsm.Algorithm) (*hsm.Key, *hsm.Key) {
	ctx := context.Background()
	sig, err := e.keys.Token.GenerateKey(ctx, hsm.KeySpec{Label: "sig-" + randHex(t), Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	kx, err := e.keys.Token.GenerateKey(ctx, hsm.KeySpec{Label: "kx-" + randHex(t), Algorithm: kxAlg, Usage: hsm.UsageKeyExchange})
	require.NoError(t, err)
	return sig, kx
}

func TestEntityRegistration(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		role pki.Role
		a    *ca.Authority
		kx   hsm.Algorithm
	}{{pki.RoleMerchant, e.h.MCA, hsm.RSA2048}, {pki.RoleGateway, e.h.PCA, hsm.ECDSAP256}} {
		t.Run(tc.role.String(), func(t *testing.T) {
			secret, err := tc.a.Enroll(ctx, tc.role, "acme-1")
			require.NoError(t, err)
			sig, kx := tokenEntity(t, e, tc.kx)
			reg := ca.EntityRegistration{Role: tc.role, ID: "acme-1", Secret: "wrong" + secret, SignatureKey: sig, KeyExchangeKey: kx}
			before := e.issued.Load()
			_, err = e.client.RegisterEntity(ctx, reg)
			assertRefused(t, err, codes.PermissionDenied, "ENROLLMENT_INVALID")
			reg.Secret = secret
			res, err := e.client.RegisterEntity(ctx, reg)
			require.NoError(t, err)
			assert.Equal(t, before+2, e.issued.Load())
			assert.Equal(t, pki.EntityCN(tc.role, "acme-1"), res.Signature.Subject.CommonName)
			_, err = e.client.RegisterEntity(ctx, reg)
			assertRefused(t, err, codes.AlreadyExists, "ENROLLMENT_USED")
			assert.Equal(t, before+2, e.issued.Load())
		})
	}

	t.Run("refusals", func(t *testing.T) {
		secret, err := e.h.MCA.Enroll(ctx, pki.RoleMerchant, "shop-2")
		require.NoError(t, err)
		sig, _ := tokenEntity(t, e, hsm.RSA2048)
		kxSoft, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		goodKX := catest.CSR(t, kxSoft, "kx")
		badCSR := catest.CSR(t, sig, "m")
		badCSR[len(badCSR)-3] ^= 0x55
		p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
		require.NoError(t, err)
		rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
		require.NoError(t, err)
		before := e.issued.Load()
		for _, tc := range []struct {
			name   string
			req    *capb.EntityCertRequest
			code   codes.Code
			reason string
		}{
			{"cardholder asks for a merchant role", &capb.EntityCertRequest{Role: "cardholder", Id: "shop-2", Secret: secret, SignatureCsr: catest.CSR(t, sig, "x"), KeyExchangeCsr: goodKX}, codes.PermissionDenied, "ROLE_NOT_ALLOWED"},
			{"CA role", &capb.EntityCertRequest{Role: "mca", Id: "shop-2", Secret: secret, SignatureCsr: catest.CSR(t, sig, "x"), KeyExchangeCsr: goodKX}, codes.PermissionDenied, "ROLE_NOT_ALLOWED"},
			{"CSR signature does not match", &capb.EntityCertRequest{Role: "merchant", Id: "shop-2", Secret: secret, SignatureCsr: badCSR, KeyExchangeCsr: goodKX}, codes.PermissionDenied, "BAD_PROOF_OF_POSSESSION"},
			{"P-224 key", &capb.EntityCertRequest{Role: "merchant", Id: "shop-2", Secret: secret, SignatureCsr: catest.CSR(t, p224, "x"), KeyExchangeCsr: goodKX}, codes.InvalidArgument, "KEY_NOT_ALLOWED"},
			{"RSA-1024 key", &capb.EntityCertRequest{Role: "merchant", Id: "shop-2", Secret: secret, SignatureCsr: catest.CSR(t, sig, "x"), KeyExchangeCsr: catest.CSR(t, rsa1024, "x")}, codes.InvalidArgument, "KEY_NOT_ALLOWED"},
			{"bad id", &capb.EntityCertRequest{Role: "merchant", Id: "shop 2/..", Secret: secret, SignatureCsr: catest.CSR(t, sig, "x"), KeyExchangeCsr: goodKX}, codes.InvalidArgument, "BAD_REQUEST"},
			{"garbage CSR", &capb.EntityCertRequest{Role: "merchant", Id: "shop-2", Secret: secret, SignatureCsr: []byte("garbage"), KeyExchangeCsr: goodKX}, codes.InvalidArgument, "BAD_CSR"},
			{"no key-exchange key", &capb.EntityCertRequest{Role: "merchant", Id: "shop-2", Secret: secret, SignatureCsr: catest.CSR(t, sig, "x")}, codes.InvalidArgument, "BAD_REQUEST"},
			{"unanswered challenge", &capb.EntityCertRequest{Role: "merchant", Id: "shop-2", Secret: secret, SignatureCsr: catest.CSR(t, sig, "x"), KeyExchangeKey: []byte("\x30\x00"), KeyExchangeProof: make([]byte, 32)}, codes.InvalidArgument, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := e.raw.EntityCertReq(ctx, tc.req)
				require.Error(t, err)
				assert.Equal(t, tc.code, status.Code(err), "%v", err)
				if tc.reason != "" {
					assert.Equal(t, tc.reason, ca.RefusalReason(err), "%v", err)
				}
			})
		}
		assert.Equal(t, before, e.issued.Load())
		// None of the refusals burnt the secret.
		_, err = e.raw.EntityCertReq(ctx, &capb.EntityCertRequest{Role: "merchant", Id: "shop-2", Secret: secret, SignatureCsr: catest.CSR(t, sig, "x"), KeyExchangeCsr: goodKX})
		require.NoError(t, err)
	})
}

func TestRenewAndRevoke(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	secret, err := e.h.PCA.Enroll(ctx, pki.RoleGateway, "gw-1")
	require.NoError(t, err)
	sig, kx := tokenEntity(t, e, hsm.RSA2048)
	res, err := e.client.RegisterEntity(ctx, ca.EntityRegistration{Role: pki.RoleGateway, ID: "gw-1", Secret: secret, SignatureKey: sig, KeyExchangeKey: kx})
	require.NoError(t, err)

	newKey, _ := tokenEntity(t, e, hsm.RSA2048)
	renewed, chain, err := e.client.Renew(ctx, sig, res.Signature, newKey)
	require.NoError(t, err)
	assert.Equal(t, res.Signature.Subject.CommonName, renewed.Subject.CommonName)
	_, err = e.client.Verifier().Verify(ctx, res.Signature, chain, pki.Expect{Role: pki.RoleGateway, Purpose: pki.PurposeSignature}, time.Now())
	assert.ErrorIs(t, err, pki.ReasonRevoked, "the old certificate is superseded")
	// The superseded certificate cannot renew again.
	_, _, err = e.client.Renew(ctx, sig, res.Signature, newKey)
	assertRefused(t, err, codes.PermissionDenied, "CERTIFICATE_REVOKED")
	// Renewal with the same key is refused.
	_, _, err = e.client.Renew(ctx, newKey, renewed, newKey)
	assertRefused(t, err, codes.InvalidArgument, "KEY_NOT_ALLOWED")
	// A key-exchange certificate cannot authenticate requests.
	assert.Error(t, e.client.Revoke(ctx, sig, res.KeyExchange, ca.RevokeKeyCompromise))

	// Only the holder's own certificate, with an allowed reason.
	bad := signed(t, ca.ContentTypeRevoke, &capb.RevokeTBS{Serial: res.KeyExchange.SerialNumber.Bytes(), Reason: 1}, newKey, renewed)
	_, err = e.raw.Revoke(ctx, &capb.RevokeRequest{Signed: bad})
	assertRefused(t, err, codes.PermissionDenied, "NOT_OWNER")
	assert.Error(t, e.client.Revoke(ctx, newKey, renewed, 7))
	require.NoError(t, e.client.Revoke(ctx, newKey, renewed, ca.RevokeKeyCompromise))
	_, err = e.client.Verifier().Verify(ctx, renewed, chain, pki.Expect{Role: pki.RoleGateway, Purpose: pki.PurposeSignature}, time.Now())
	assert.ErrorIs(t, err, pki.ReasonRevoked)
	crl, err := e.client.CRL(ctx, pki.RolePCA)
	require.NoError(t, err)
	assert.Len(t, crl.RevokedCertificateEntries, 2)

	_, err = e.raw.GetCRL(ctx, &capb.GetCRLRequest{Ca: "merchant"})
	assertRefused(t, err, codes.InvalidArgument, "BAD_REQUEST")
	_, err = e.raw.CertInquiry(ctx, &capb.CertInquiryRequest{RequestId: "nope"})
	assertRefused(t, err, codes.InvalidArgument, "BAD_REQUEST")
	_, err = e.raw.CertInquiry(ctx, &capb.CertInquiryRequest{RequestId: "0123456789abcdef0123456789abcdef"})
	assertRefused(t, err, codes.NotFound, "UNKNOWN_REQUEST")
}

func TestApprovalMode(t *testing.T) {
	q, err := ca.NewPendingQueue(filepath.Join(t.TempDir(), "pending"))
	require.NoError(t, err)
	e := newRegEnv(t, func(c *ca.ServerConfig) { c.Pending = q })
	ctx := context.Background()
	for _, approve := range []bool{true, false} {
		id := "shop-a"
		if !approve {
			id = "shop-r"
		}
		secret, err := e.h.MCA.Enroll(ctx, pki.RoleMerchant, id)
		require.NoError(t, err)
		sig, kx := tokenEntity(t, e, hsm.RSA2048)
		reg := ca.EntityRegistration{Role: pki.RoleMerchant, ID: id, Secret: secret, SignatureKey: sig, KeyExchangeKey: kx}
		before := e.issued.Load()
		res, err := e.client.RegisterEntity(ctx, reg)
		require.NoError(t, err)
		require.True(t, res.Pending)
		assert.Equal(t, before, e.issued.Load(), "nothing issued before approval")
		_, err = e.client.RegisterEntity(ctx, reg)
		assertRefused(t, err, codes.AlreadyExists, "ENROLLMENT_USED")
		again, err := e.client.Inquire(ctx, res.RequestID, reg)
		require.NoError(t, err)
		assert.True(t, again.Pending)

		list, err := q.List()
		require.NoError(t, err)
		assert.NotEmpty(t, list)
		_, err = q.Decide(ctx, e.h, res.RequestID, approve, time.Now())
		require.NoError(t, err)
		_, err = q.Decide(ctx, e.h, res.RequestID, approve, time.Now())
		assert.Error(t, err, "decided once")
		got, err := e.client.Inquire(ctx, res.RequestID, reg)
		if !approve {
			assertRefused(t, err, codes.PermissionDenied, "REQUEST_REJECTED")
			assert.Equal(t, before, e.issued.Load())
			continue
		}
		require.NoError(t, err)
		assert.False(t, got.Pending)
		assert.Equal(t, before+2, e.issued.Load())
		assert.Equal(t, pki.EntityCN(pki.RoleMerchant, id), got.Signature.Subject.CommonName)
		// The answer is checked against the caller's keys.
		other, _ := tokenEntity(t, e, hsm.RSA2048)
		_, err = e.client.Inquire(ctx, res.RequestID, ca.EntityRegistration{Role: pki.RoleMerchant, ID: id, SignatureKey: other, KeyExchangeKey: kx})
		assert.Error(t, err)
	}
}

// Finding 1 (padding oracle at the CCA): the card-data envelope is opened with
// the one cipher policy. Unauthenticated AES-CBC is refused whatever is broken in
// it, and every way a GCM envelope can fail to open (its tag, its ciphertext, its
// wrapped key) gets the same status, reason and text, and issues nothing.
func TestCertReqEnvelopeFailuresLookAlike(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	key := walletKey(t, e)
	ct := cms.ProtocolContentType(ca.ContentTypeAccountInfo)
	seal := func(c cms.Cipher, tamper func([]byte) []byte) func([]byte) []byte {
		return func(acct []byte) []byte {
			der, err := cms.Encrypt(acct, cms.EncryptOptions{Recipients: []*x509.Certificate{e.ccaKX}, ContentType: ct, Cipher: c})
			require.NoError(t, err)
			return tamper(bytes.Clone(der))
		}
	}
	flip := func(i func([]byte) int) func([]byte) []byte {
		return func(der []byte) []byte { der[i(der)] ^= 0x01; return der }
	}
	none := func(der []byte) []byte { return der }
	fromEnd := func(n int) func([]byte) int { return func(der []byte) int { return len(der) - n } }
	wrappedKey := func(der []byte) int { return bytes.Index(der, []byte{0x04, 0x82, 0x01, 0x00}) + 4 + 100 }
	// AuthEnvelopedData ends ... ciphertext, authAttrs (26 bytes), mac (18 bytes).
	gcmCiphertext := func(der []byte) int {
		return bytes.LastIndex(der, []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03}) - 5
	}
	start := e.issued.Load()
	cases := []struct {
		name     string
		envelope func([]byte) []byte
	}{
		{"CBC intact", seal(cms.AES256CBC, none)},
		{"CBC padding byte broken", seal(cms.AES256CBC, flip(fromEnd(17)))},
		{"CBC earlier block broken", seal(cms.AES256CBC, flip(fromEnd(40)))},
	}
	var cbcTexts []string
	for _, tc := range cases {
		_, err := e.raw.CertReq(ctx, &capb.CertReqRequest{Signed: e.buildCertReq(t, certReq{pan: cardOK, expiry: cardExpiry, postal: postalCode, key: key, envelope: tc.envelope})})
		assertRefused(t, err, codes.InvalidArgument, "BAD_ENVELOPE")
		assert.Contains(t, err.Error(), "authenticated encryption", tc.name)
		cbcTexts = append(cbcTexts, status.Convert(err).Message())
	}
	assert.Equal(t, cbcTexts[0], cbcTexts[1])
	assert.Equal(t, cbcTexts[1], cbcTexts[2])

	gcm := []struct {
		name     string
		envelope func([]byte) []byte
	}{
		{"GCM tag broken", seal(cms.AES256GCM, flip(fromEnd(1)))},
		{"GCM ciphertext broken", seal(cms.AES256GCM, flip(gcmCiphertext))},
		{"GCM wrapped key broken", seal(cms.AES256GCM, flip(wrappedKey))},
	}
	var texts []string
	for _, tc := range gcm {
		_, err := e.raw.CertReq(ctx, &capb.CertReqRequest{Signed: e.buildCertReq(t, certReq{pan: cardOK, expiry: cardExpiry, postal: postalCode, key: key, envelope: tc.envelope})})
		assertRefused(t, err, codes.InvalidArgument, "BAD_ENVELOPE")
		texts = append(texts, status.Convert(err).Message())
	}
	assert.Equal(t, texts[0], texts[1], "tag vs ciphertext")
	assert.Equal(t, texts[1], texts[2], "ciphertext vs wrapped key")
	assert.Equal(t, "BAD_ENVELOPE: card data envelope: "+cms.ErrDecrypt.Error(), texts[0])

	// Finding 5: an id-data envelope (the type not bound) is refused before decryption.
	_, err := e.raw.CertReq(ctx, &capb.CertReqRequest{Signed: e.buildCertReq(t, certReq{pan: cardOK, expiry: cardExpiry, postal: postalCode, key: key,
		envelope: func(acct []byte) []byte {
			der, err := cms.Encrypt(acct, cms.EncryptOptions{Recipients: []*x509.Certificate{e.ccaKX}})
			require.NoError(t, err)
			return der
		}})})
	assertRefused(t, err, codes.InvalidArgument, "BAD_ENVELOPE")
	assert.Contains(t, err.Error(), "content type")
	assert.Equal(t, start, e.issued.Load(), "no refused request issued anything")
}

// BenchmarkCardDataFailureTiming: the CCA's token key (SoftHSM) opening card-data
// envelopes broken in the GCM tag or in the RSA-OAEP wrapped key, interleaved; it
// reports the ratio of their mean times (1: no difference). The broken-key path
// includes the token's failing OAEP decode and then GCM under a random key.
func BenchmarkCardDataFailureTiming(b *testing.B) {
	e := newRegEnv(b)
	kx, err := e.keys.Token.FindKey(context.Background(), "setpay-cca-kx")
	require.NoError(b, err)
	der, err := cms.Encrypt(bytes.Repeat([]byte{1}, 200), cms.EncryptOptions{Recipients: []*x509.Certificate{e.ccaKX},
		ContentType: cms.ProtocolContentType(ca.ContentTypeAccountInfo)})
	require.NoError(b, err)
	tag, key := bytes.Clone(der), bytes.Clone(der)
	tag[len(tag)-1] ^= 1
	key[bytes.Index(key, []byte{0x04, 0x82, 0x01, 0x00})+4+100] ^= 1
	var dTag, dKey time.Duration
	for b.Loop() {
		for _, tc := range []struct {
			der []byte
			d   *time.Duration
		}{{tag, &dTag}, {key, &dKey}} {
			start := time.Now()
			_, _, err := cms.Decrypt(tc.der, e.ccaKX, kx)
			*tc.d += time.Since(start)
			if !errors.Is(err, cms.ErrDecrypt) {
				b.Fatalf("got %v", err)
			}
		}
	}
	b.ReportMetric(float64(dKey)/float64(dTag), "keybroken/tagbroken")
}

// TestServiceCRLsFeedARefresher: a running service refreshing from the CA service
// sees a revocation made after it started.
func TestServiceCRLsFeedARefresher(t *testing.T) {
	ctx := context.Background()
	e := newRegEnv(t)
	var cas []*x509.Certificate
	for _, a := range e.h.Authorities() {
		cas = append(cas, a.Certificate())
	}
	crls := pki.NewMemoryCRLs()
	r, err := pki.NewCRLRefresher(pki.CRLRefresherConfig{Into: crls, Issuers: cas, Sources: []pki.CRLFetcher{e.client.CRLFetcher("test CA")}})
	require.NoError(t, err)
	require.NoError(t, r.Refresh(ctx))
	for _, s := range r.Status() {
		assert.NotEmpty(t, s.Number, "a CRL of %s was fetched", s.Issuer)
	}
	before, err := crls.CRL(ctx, e.h.MCA.Certificate())
	require.NoError(t, err)

	secret, err := e.h.MCA.Enroll(ctx, pki.RoleMerchant, "shop-crl")
	require.NoError(t, err)
	sig, err := e.keys.Token.GenerateKey(ctx, hsm.KeySpec{Label: "shop-crl-sig", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	kx, err := e.keys.Token.GenerateKey(ctx, hsm.KeySpec{Label: "shop-crl-kx", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	certs, err := e.h.MCA.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleMerchant, ID: "shop-crl", Secret: secret,
		SignatureCSR: catest.CSR(t, sig, "shop-crl"), KeyExchangeCSR: catest.CSR(t, kx, "shop-crl")})
	require.NoError(t, err)
	require.NoError(t, e.h.MCA.Revoke(ctx, certs.Signature.SerialNumber, 1))

	require.NoError(t, r.Refresh(ctx))
	after, err := crls.CRL(ctx, e.h.MCA.Certificate())
	require.NoError(t, err)
	assert.Equal(t, 1, after.Number.Cmp(before.Number), "a newer MCA CRL was installed")
	v, err := pki.NewVerifier(e.h.Root.Certificate(), crls)
	require.NoError(t, err)
	_, err = v.Verify(ctx, certs.Signature, []*x509.Certificate{e.h.MCA.Certificate(), e.h.Brand.Certificate()},
		pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature}, time.Now())
	assert.ErrorIs(t, err, pki.ReasonRevoked)
}
