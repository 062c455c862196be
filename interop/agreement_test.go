package interop_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/gateway"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/wallet"
)

// agreementCases are hostile wallets (or a wallet library) that dual-sign a valid
// purchase whose PI is enveloped to more than the gateway, or which names another
// gateway than the one offered. Each is refused by the merchant when it comes
// through the merchant, and by the gateway when a merchant forwards it anyway.
func agreementCases(t *testing.T, b *bed, mer setpb.MerchantClient) []hostileCase {
	ctx := context.Background()
	gw := setpb.NewGatewayClient(b.GatewayConn)
	gwKX, merKX := b.GatewayEnt.KXCert, b.MerchantEnt.KXCert
	// prepared is a dual-signed purchase request after mut changed the session, with
	// the PI enveloped to recipients (nil: as the wallet does, to the gateway only).
	prepared := func(mut func(s *wallet.Session), recipients ...*x509.Certificate) (*wallet.Session, *setpb.PurchaseRequest) {
		w, err := b.Wallet(0)
		require.NoError(t, err)
		s, err := w.Start(ctx, "book")
		require.NoError(t, err)
		mut(s)
		req, err := w.Prepare(s)
		require.NoError(t, err)
		if len(recipients) > 0 {
			pi, err := setproto.Marshal(s.PI)
			require.NoError(t, err)
			require.Equal(t, req.GetPiHash(), setproto.Hash(pi))
			req.PiEnvelope, err = cms.Encrypt(pi, cms.EncryptOptions{Recipients: recipients,
				ContentType: setproto.ContentType(setpb.ContentKind_PAYMENT_INSTRUCTIONS), Cipher: cms.AES256GCM})
			require.NoError(t, err)
		}
		return s, req
	}
	viaMerchant := func(req *setpb.PurchaseRequest) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := mer.Purchase(ctx, req)
			return err
		}
	}
	// forwarded is what a merchant colluding with the wallet sends the gateway.
	forwarded := func(s *wallet.Session, req *setpb.PurchaseRequest) func(context.Context) error {
		rrpid, err := setproto.NewID()
		require.NoError(t, err)
		challM, err := setproto.NewChallenge()
		require.NoError(t, err)
		tp := pki.ThumbprintOf(merKX)
		ar := &setpb.AuthRequest{Xid: s.OI.GetXid(), Rrpid: rrpid, ChallM: challM, MerchantId: b.MerchantEnt.ID,
			Amount: s.OI.GetAmount(), Currency: s.OI.GetCurrency(), OiHash: setproto.Hash(req.GetOrderInfo()),
			PiEnvelope: req.GetPiEnvelope(), DualSignature: req.GetDualSignature(), MerchantKxThumbprint: tp[:]}
		signed, err := setproto.SignMessage(setpb.ContentKind_AUTH_REQUEST, ar, b.MerchantEnt.Sign, time.Now(), b.MerchantEnt.Sign.Certificates())
		require.NoError(t, err)
		env, err := setproto.Seal(setpb.ContentKind_AUTH_REQUEST, signed, gwKX, setproto.EnvelopeOptions{})
		require.NoError(t, err)
		return func(ctx context.Context) error {
			_, err := gw.Authorize(ctx, &setpb.Enveloped{Cms: env})
			return err
		}
	}
	none := func(*wallet.Session) {}
	otherGateway := func(s *wallet.Session) { s.PI.GatewayId = "gw-2" }
	merTP := pki.ThumbprintOf(merKX)
	otherKX := func(s *wallet.Session) { s.PI.GatewayKxThumbprint = merTP[:] }
	oiOtherGateway := func(s *wallet.Session) { s.OI.GatewayId = "gw-2" }
	oiOtherKX := func(s *wallet.Session) { s.OI.GatewayKxThumbprint = make([]byte, 32) }

	sBoth, both := prepared(none, gwKX, merKX)
	sFirst, merFirst := prepared(none, merKX, gwKX)
	sGW, gwPI := prepared(otherGateway)
	sKX, kxPI := prepared(otherKX)
	_, oiGW := prepared(oiOtherGateway)
	_, oiKX := prepared(oiOtherKX)
	return []hostileCase{
		{"merchant: PI enveloped to the gateway and the merchant", viaMerchant(both), setpb.Reason_EXTRA_RECIPIENT, codes.PermissionDenied},
		{"merchant: PI enveloped to the merchant and the gateway", viaMerchant(merFirst), setpb.Reason_EXTRA_RECIPIENT, codes.PermissionDenied},
		{"gateway: PI enveloped to the gateway and the merchant", forwarded(sBoth, both), setpb.Reason_EXTRA_RECIPIENT, codes.PermissionDenied},
		{"gateway: PI enveloped to the merchant and the gateway", forwarded(sFirst, merFirst), setpb.Reason_EXTRA_RECIPIENT, codes.PermissionDenied},
		{"gateway: PI names another gateway", forwarded(sGW, gwPI), setpb.Reason_GATEWAY_MISMATCH, codes.PermissionDenied},
		{"gateway: PI names another key-exchange certificate", forwarded(sKX, kxPI), setpb.Reason_GATEWAY_MISMATCH, codes.PermissionDenied},
		{"merchant: OI names another gateway", viaMerchant(oiGW), setpb.Reason_GATEWAY_MISMATCH, codes.PermissionDenied},
		{"merchant: OI names another gateway key-exchange certificate", viaMerchant(oiKX), setpb.Reason_GATEWAY_MISMATCH, codes.PermissionDenied},
	}
}

// testInitiationStoresNothing: purchase initiations from anyone (no signature is
// asked of them) write nothing to the merchant's store; the order is created by the
// dual-signed purchase request.
func testInitiationStoresNothing(t *testing.T, b *bed) {
	ctx := context.Background()
	mer := setpb.NewMerchantClient(b.MerchantConn)
	before := b.snapshot(t)
	chall := make([]byte, 32)
	for i := range 200 {
		_, err := mer.PurchaseInit(ctx, &setpb.PInitReq{Rrpid: "r" + string(rune('a'+i%26)), Brand: "SETPay", Language: "en", ChallEc: chall, OfferId: "book"})
		require.NoError(t, err)
	}
	b.requireUnchanged(t, before)

	w, err := b.Wallet(0)
	require.NoError(t, err)
	s, err := w.Start(ctx, "book")
	require.NoError(t, err)
	assert.Equal(t, before.merRows, countRows(t, b.merRO), "a wallet's initiation stores nothing either")
	req, err := w.Prepare(s)
	require.NoError(t, err)
	r, err := w.Send(ctx, s, req)
	require.NoError(t, err)
	assert.True(t, r.Approved())
	assert.Equal(t, before.merRows["orders"]+1, countRows(t, b.merRO)["orders"], "the purchase request creates the order")
}

// testGatewayClientIdentity: the gateway serves only TLS clients whose certificate
// names a merchant with client authentication as its only usage, and only requests
// signed by that merchant. Any other certificate of the TLS CA — a "probe", one good
// for both ends, a server's — gets nothing, before any key is used for it.
func testGatewayClientIdentity(t *testing.T, b *bed) {
	ctx := context.Background()
	b.buy(t, 0, "book") // the audit chain has a head before the snapshots
	good, err := setproto.Marshal(newAuthRequest(t, b, 0))
	require.NoError(t, err)
	signed, err := setproto.Sign(setpb.ContentKind_AUTH_REQUEST, good, b.MerchantEnt.Sign, time.Now(),
		append(b.MerchantEnt.Sign.Certificates(), b.MerchantEnt.KXCert))
	require.NoError(t, err)
	env, err := setproto.Seal(setpb.ContentKind_AUTH_REQUEST, signed, b.GatewayEnt.KXCert, setproto.EnvelopeOptions{})
	require.NoError(t, err)
	n := 0
	conn := func(issue func(string, crypto.Signer, time.Duration) (tlsrpc.Identity, error), name string) setpb.GatewayClient {
		n++
		k, err := b.merTok.GenerateKey(ctx, hsm.KeySpec{Label: fmt.Sprintf("tls-probe-%d", n), Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
		require.NoError(t, err)
		id, err := issue(name, k, time.Hour)
		require.NoError(t, err)
		c, err := grpc.NewClient(b.GatewayAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(&id, b.TLS.Pool(), "127.0.0.1"))))
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		gc := setpb.NewGatewayClient(c)
		_, _ = gc.Authorize(ctx, &setpb.Enveloped{}) // connect now, before the snapshots
		return gc
	}
	for _, tc := range []struct {
		name   string
		client setpb.GatewayClient
		reason setpb.Reason
	}{
		{"a probe's client certificate", conn(b.TLS.IssueClient, "probe"), setpb.Reason_CERT_WRONG_ROLE},
		{"the merchant's name on a certificate for both ends", conn(b.TLS.Issue, gateway.TLSClientName(b.MerchantEnt.ID)), setpb.Reason_CERT_WRONG_ROLE},
		{"another merchant's client certificate", conn(b.TLS.IssueClient, gateway.TLSClientName("shop-2")), setpb.Reason_MERCHANT_MISMATCH},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.snapshot(t)
			_, err := tc.client.Authorize(ctx, &setpb.Enveloped{Cms: env})
			requireRefused(t, err, tc.reason)
			b.requireUnchanged(t, before)
		})
	}
	t.Run("a server certificate as client", func(t *testing.T) {
		_, err := conn(b.TLS.IssueServer, gateway.TLSClientName(b.MerchantEnt.ID)).Authorize(ctx, &setpb.Enveloped{Cms: env})
		require.Error(t, err)
		assert.Equal(t, codes.Unavailable, status.Code(err), "the TLS handshake fails: %v", err)
	})
	_, err = setpb.NewGatewayClient(b.GatewayConn).Authorize(ctx, &setpb.Enveloped{Cms: env})
	require.NoError(t, err, "the merchant's own client certificate still works")
}
