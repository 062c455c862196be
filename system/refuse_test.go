package system_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/internal/clock"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
	"github.com/setpay/setpay/wallet"
)

// localMerchant lets a wallet call a merchant in-process (one with its own clock).
type localMerchant struct{ m *merchant.Merchant }

func (l localMerchant) PurchaseInit(ctx context.Context, in *setpb.PInitReq, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return l.m.PurchaseInit(ctx, in)
}

func (l localMerchant) Purchase(ctx context.Context, in *setpb.PurchaseRequest, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return l.m.Purchase(ctx, in)
}

func (l localMerchant) Inquiry(ctx context.Context, in *setpb.Signed, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return l.m.Inquiry(ctx, in)
}

func TestRefusals(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	mc := setpb.NewMerchantClient(e.MerchantConn)
	alice := e.Cardholders[0].Identity

	start := func(t *testing.T, id wallet.Identity) (*wallet.Wallet, *wallet.Session) {
		w, err := e.WalletFor(id)
		require.NoError(t, err)
		s, err := w.Start(ctx, "book")
		require.NoError(t, err)
		return w, s
	}
	send := func(t *testing.T, w *wallet.Wallet, s *wallet.Session, req *setpb.PurchaseRequest) error {
		_, err := w.Send(ctx, s, req)
		return err
	}

	t.Run("tampered OI", func(t *testing.T) {
		w, s := start(t, alice)
		req, err := w.Prepare(s)
		require.NoError(t, err)
		oi := proto.Clone(s.OI).(*setpb.OrderInfo)
		oi.Amount = 1
		req.OrderInfo, err = setproto.Marshal(oi)
		require.NoError(t, err)
		requireRefused(t, send(t, w, s, req), setpb.Reason_BAD_SIGNATURE)
	})
	t.Run("tampered PI", func(t *testing.T) {
		w, s := start(t, alice)
		req, err := w.Prepare(s)
		require.NoError(t, err)
		req.PiEnvelope[len(req.PiEnvelope)-3] ^= 0x40 // in the GCM tag
		requireRefused(t, send(t, w, s, req), setpb.Reason_DECRYPT_FAILED)
	})
	t.Run("PI spliced from another purchase", func(t *testing.T) {
		w, s := start(t, alice)
		req, err := w.Prepare(s)
		require.NoError(t, err)
		_, s2 := start(t, alice)
		req2, err := w.Prepare(s2)
		require.NoError(t, err)
		req.PiEnvelope = req2.PiEnvelope
		requireRefused(t, send(t, w, s, req), setpb.Reason_XID_MISMATCH)
	})
	t.Run("amount in OI differs from PI", func(t *testing.T) {
		w, s := start(t, alice)
		s.PI.Amount = s.OI.Amount - 1
		req, err := w.Prepare(s)
		require.NoError(t, err)
		requireRefused(t, send(t, w, s, req), setpb.Reason_AMOUNT_MISMATCH)
	})
	t.Run("PI for another merchant", func(t *testing.T) {
		w, s := start(t, alice)
		s.PI.MerchantId = "shop-2"
		req, err := w.Prepare(s)
		require.NoError(t, err)
		requireRefused(t, send(t, w, s, req), setpb.Reason_MERCHANT_MISMATCH)
	})
	t.Run("revoked cardholder certificate", func(t *testing.T) {
		ch, err := e.IssueCardholder(ctx, e.walTok, cards[systemtest.Alice])
		require.NoError(t, err)
		require.NoError(t, e.H.CCA.Revoke(ctx, ch.Identity.Cert.SerialNumber, ca.RevokeKeyCompromise))
		require.NoError(t, e.PublishCRLs(ctx))
		w, s := start(t, ch.Identity)
		req, err := w.Prepare(s)
		require.NoError(t, err)
		requireRefused(t, send(t, w, s, req), setpb.Reason_CERT_REVOKED)
	})
	t.Run("expired cardholder certificate", func(t *testing.T) {
		ch, err := e.IssueCardholderFor(ctx, e.walTok, cards[systemtest.Alice], time.Hour)
		require.NoError(t, err)
		// The merchant's clock, not the test, moves past the certificate's end.
		clk := clock.NewManual(time.Now())
		trust := e.NewTrust()
		trust.Clock = clk.Now
		m, err := merchant.New(ctx, merchant.Config{Sign: e.MerchantEnt.Sign, KXCert: e.MerchantEnt.KXCert, KXKey: e.MerchantEnt.KXKey,
			Trust: trust, Store: e.MerchantDB, Brand: system.Brand, GatewayKX: e.GatewayEnt.KXCert,
			GatewayChain: []*x509.Certificate{e.H.PCA.Certificate(), e.H.Brand.Certificate()},
			Gateway:      setpb.NewGatewayClient(e.GatewayConn), Offers: systemtest.Offers(), ChallengeKey: e.ChallengeKey, Clock: clk.Now})
		require.NoError(t, err)
		w, err := wallet.New(wallet.Config{Identity: ch.Identity, Trust: e.NewTrust(), Merchant: localMerchant{m}, Brand: system.Brand})
		require.NoError(t, err)
		s, err := w.Start(ctx, "book")
		require.NoError(t, err)
		req, err := w.Prepare(s)
		require.NoError(t, err)
		clk.Set(ch.Identity.Cert.NotAfter.Add(time.Second))
		requireRefused(t, send(t, w, s, req), setpb.Reason_CERT_EXPIRED)
	})
	t.Run("wallet certificate of the wrong role", func(t *testing.T) {
		m := e.MerchantEnt.Sign
		w, s := start(t, wallet.Identity{Key: m.Key, Cert: m.Cert, Chain: m.Chain, Card: alice.Card})
		req, err := w.Prepare(s)
		require.NoError(t, err)
		requireRefused(t, send(t, w, s, req), setpb.Reason_CERT_WRONG_ROLE)
	})
	t.Run("gateway certificate not issued by the PCA", func(t *testing.T) {
		mcaKey, err := e.caTok.FindKey(ctx, "setpay-mca")
		require.NoError(t, err)
		real := e.GatewayEnt.KXCert
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl := &x509.Certificate{SerialNumber: serial, Subject: real.Subject, NotBefore: real.NotBefore, NotAfter: real.NotAfter,
			KeyUsage: x509.KeyUsageKeyEncipherment, Policies: pki.Policies(pki.RoleGateway, pki.PurposeKeyExchange),
			BasicConstraintsValid: true}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, e.H.MCA.Certificate(), real.PublicKey, mcaKey)
		require.NoError(t, err)
		forged, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		tp := pki.ThumbprintOf(forged)
		// what the wallet runs on the certificate a merchant offers
		_, _, err = e.NewTrust().VerifyKeyExchange(ctx, tp[:], []*x509.Certificate{forged, e.H.MCA.Certificate()}, pki.RoleGateway)
		requireRefused(t, err, setpb.Reason_CERT_WRONG_ROLE)
		// and a merchant refuses to hand it out
		ent := *e.MerchantEnt
		_, err = merchant.New(ctx, merchant.Config{Sign: ent.Sign, KXCert: ent.KXCert, KXKey: ent.KXKey, Trust: e.NewTrust(),
			Store: e.MerchantDB, Brand: "SETPay", GatewayKX: forged, GatewayChain: []*x509.Certificate{e.H.MCA.Certificate()},
			Gateway: setpb.NewGatewayClient(e.GatewayConn), ChallengeKey: e.ChallengeKey})
		require.Error(t, err)
		assert.Equal(t, setpb.Reason_CERT_WRONG_ROLE, setproto.ReasonOf(err))
	})
	t.Run("merchant forwards another merchant's PI", func(t *testing.T) {
		ent2, err := e.RegisterEntity(ctx, pki.RoleMerchant, "shop-2", e.merTok)
		require.NoError(t, err)
		m2, err := e.NewMerchant(ctx, ent2, e.MerchantDB, setpb.NewGatewayClient(e.GatewayConn))
		require.NoError(t, err)
		w, s := start(t, alice)
		req, err := w.Prepare(s)
		require.NoError(t, err)
		_, err = m2.Authorize(ctx, merchant.AuthInput{XID: s.OI.GetXid(), Amount: s.OI.GetAmount(), Currency: s.OI.GetCurrency(),
			OIHash: setproto.Hash(req.GetOrderInfo()), PIEnvelope: req.GetPiEnvelope(), DualSignature: req.GetDualSignature()})
		requireRefused(t, err, setpb.Reason_MERCHANT_MISMATCH)
	})
	t.Run("truncated or garbage messages", func(t *testing.T) {
		w, s := start(t, alice)
		req, err := w.Prepare(s)
		require.NoError(t, err)
		for name, mut := range map[string]func(r *setpb.PurchaseRequest){
			"truncated dual signature": func(r *setpb.PurchaseRequest) { r.DualSignature = r.DualSignature[:len(r.DualSignature)/2] },
			"truncated OI":             func(r *setpb.PurchaseRequest) { r.OrderInfo = r.OrderInfo[:len(r.OrderInfo)-5] },
			"garbage OI":               func(r *setpb.PurchaseRequest) { r.OrderInfo = bytes.Repeat([]byte{0xff}, 40) },
			"short PI hash":            func(r *setpb.PurchaseRequest) { r.PiHash = r.PiHash[:10] },
			"empty":                    func(r *setpb.PurchaseRequest) { *r = setpb.PurchaseRequest{} },
		} {
			r := proto.Clone(req).(*setpb.PurchaseRequest)
			mut(r)
			_, err := mc.Purchase(ctx, r)
			t.Log(name)
			requireRefused(t, err, setpb.Reason_MALFORMED)
		}
		_, err = mc.PurchaseInit(ctx, &setpb.PInitReq{Rrpid: "x", Brand: "SETPay", ChallEc: []byte("short"), OfferId: "book"})
		requireRefused(t, err, setpb.Reason_MALFORMED)
		_, err = mc.Inquiry(ctx, &setpb.Signed{Cms: []byte{0x30, 0x80, 1, 2, 3}})
		requireRefused(t, err, setpb.Reason_MALFORMED)
		_, err = setpb.NewGatewayClient(e.GatewayConn).Authorize(ctx, &setpb.Enveloped{Cms: bytes.Repeat([]byte{0x30}, 100)})
		requireRefused(t, err, setpb.Reason_MALFORMED)
		// the real purchase still goes through afterwards: nothing was half-written
		r, err := w.Send(ctx, s, req)
		require.NoError(t, err)
		assert.True(t, r.Approved())
	})
}

func TestMerchantCannotReadPANAndGatewayNeverSeesOrder(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	w, err := e.Wallet(systemtest.Alice)
	require.NoError(t, err)
	r, err := w.Buy(ctx, "book")
	require.NoError(t, err)
	require.True(t, r.Approved())
	pan := []byte(cards[systemtest.Alice].PAN)
	od := []byte(systemtest.Offers()[0].Description)

	merKeys, err := e.merTok.Keys(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, merKeys)
	var preqs int
	for _, m := range e.merRec.Requests() {
		raw, err := proto.Marshal(m)
		require.NoError(t, err)
		assert.False(t, bytes.Contains(raw, pan), "the merchant received the PAN")
		if p, ok := m.(*setpb.PurchaseRequest); ok {
			preqs++
			for _, k := range merKeys {
				_, err := setproto.Unseal(p.GetPiEnvelope(), setpb.ContentKind_PAYMENT_INSTRUCTIONS, e.MerchantEnt.KXCert, k)
				assert.Error(t, err, "merchant key %s opened the PI", k.Label())
			}
		}
	}
	require.Equal(t, 1, preqs)

	var auths int
	for _, m := range e.gwRec.Requests() {
		raw, err := proto.Marshal(m)
		require.NoError(t, err)
		assert.False(t, bytes.Contains(raw, od))
		env := m.(*setpb.Enveloped)
		inner, err := setproto.Unseal(env.GetCms(), setpb.ContentKind_AUTH_REQUEST, e.GatewayEnt.KXCert, e.GatewayEnt.KXKey)
		require.NoError(t, err)
		v, err := e.NewTrust().Open(ctx, inner, nil, setpb.ContentKind_AUTH_REQUEST, pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature})
		require.NoError(t, err)
		assert.False(t, bytes.Contains(v.Content, od))
		req, err := setproto.ParseAuthRequest(v.Content)
		require.NoError(t, err)
		pi, err := setproto.Unseal(req.GetPiEnvelope(), setpb.ContentKind_PAYMENT_INSTRUCTIONS, e.GatewayEnt.KXCert, e.GatewayEnt.KXKey)
		require.NoError(t, err)
		assert.False(t, bytes.Contains(pi, od))
		assert.True(t, bytes.Contains(pi, pan), "only the gateway reads the PAN")
		auths++
	}
	require.Equal(t, 1, auths)
}
