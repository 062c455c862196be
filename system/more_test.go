package system_test

import (
	"context"
	"crypto"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/setpay/setpay/gateway"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system/systemtest"
	"github.com/setpay/setpay/wallet"
)

func TestConcurrentDuplicatesAuthorizeOnce(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	w, err := e.Wallet(systemtest.Alice)
	require.NoError(t, err)
	s, err := w.Start(ctx, "book")
	require.NoError(t, err)
	req, err := w.Prepare(s)
	require.NoError(t, err)
	mc := setpb.NewMerchantClient(e.MerchantConn)
	const n = 6
	answers := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := mc.Purchase(ctx, req)
			errs[i] = err
			if err == nil {
				answers[i] = out.GetCms()
			}
		}()
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		assert.Equal(t, answers[0], answers[i], "every duplicate gets the same answer")
	}
	bal, _ := e.Ledger.Balance(cards[systemtest.Alice].PAN)
	assert.Equal(t, cards[systemtest.Alice].Balance-25_00, bal, "funds held once")
	n2, err := e.GatewayDB.VerifyAudit(ctx)
	require.NoError(t, err)
	recs, err := e.GatewayDB.ListAudit(ctx, 0, 1000)
	require.NoError(t, err)
	require.Len(t, recs, int(n2))
	decided, retries := 0, 0
	for _, r := range recs {
		if r.Details == "retry answered from store" {
			retries++ // a duplicate that reached the gateway still used its key-exchange key
			assert.Contains(t, r.Purpose, "decrypt")
		} else {
			decided++
		}
	}
	assert.Equal(t, 4, decided, "one authorization's key operations audited once")
	assert.Zero(t, retries%2, "each duplicate at the gateway opened the request and the PI")
}

func TestInquiryOfUnknownTransaction(t *testing.T) {
	e := newBed(t)
	w, err := e.Wallet(systemtest.Alice)
	require.NoError(t, err)
	_, err = w.Inquire(context.Background(), "no-such-xid")
	requireRefused(t, err, setpb.Reason_UNKNOWN_TRANSACTION)
}

// directGateway calls a gateway in-process and lets the test swap it, as a restart.
type directGateway struct {
	setpb.GatewayClient // lifecycle calls are not used here
	g                   atomic.Pointer[gateway.Gateway]
	calls               atomic.Int32
}

func (d *directGateway) Authorize(ctx context.Context, in *setpb.Enveloped, _ ...grpc.CallOption) (*setpb.Enveloped, error) {
	d.calls.Add(1)
	return d.g.Load().Authorize(ctx, in)
}

func TestMerchantResendsCertificatesAfterGatewayRestart(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	newGateway := func() *gateway.Gateway {
		g, err := gateway.New(gateway.Config{Sign: e.GatewayEnt.Sign, KXCert: e.GatewayEnt.KXCert, KXKey: e.GatewayEnt.KXKey,
			Trust: e.NewTrust(), Store: e.GatewayDB, PANHashKey: e.PANHasher, Issuer: e.Ledger})
		require.NoError(t, err)
		return g
	}
	d := &directGateway{}
	d.g.Store(newGateway())
	m, err := e.NewMerchant(ctx, e.MerchantEnt, e.MerchantDB, d)
	require.NoError(t, err)
	w, err := e.Wallet(systemtest.Alice)
	require.NoError(t, err)
	authorize := func() *merchant.AuthOutcome {
		s, err := w.Start(ctx, "book")
		require.NoError(t, err)
		req, err := w.Prepare(s)
		require.NoError(t, err)
		out, err := m.Authorize(ctx, merchant.AuthInput{XID: s.OI.GetXid(), Amount: s.OI.GetAmount(), Currency: s.OI.GetCurrency(),
			OIHash: setproto.Hash(req.GetOrderInfo()), PIEnvelope: req.GetPiEnvelope(), DualSignature: req.GetDualSignature()})
		require.NoError(t, err)
		return out
	}
	assert.Equal(t, setpb.AuthResult_APPROVED, authorize().Response.GetResult())
	assert.Equal(t, setpb.AuthResult_APPROVED, authorize().Response.GetResult())
	assert.Equal(t, int32(2), d.calls.Load(), "the second request names the certificates by thumbprint")
	d.g.Store(newGateway()) // restart: empty certificate cache
	assert.Equal(t, setpb.AuthResult_APPROVED, authorize().Response.GetResult())
	assert.Equal(t, int32(4), d.calls.Load(), "CERT_UNKNOWN, then the certificates again")
}

// SoftHSM 2.6.1 unwraps RSA-OAEP only with SHA-1: an OAEP-SHA-256 PI envelope is
// refused by the gateway's token unless the token supports it, which ProbeOAEP tells.
func TestOAEPSHA256FollowsTheToken(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	w, err := wallet.New(wallet.Config{Identity: e.Cardholders[0].Identity, Trust: e.NewTrust(),
		Merchant: setpb.NewMerchantClient(e.MerchantConn), Brand: "SETPay", Envelope: setproto.EnvelopeOptions{OAEPHash: crypto.SHA256}})
	require.NoError(t, err)
	// the merchant's answer to the gateway uses SHA-1, so only the PI envelope differs
	r, err := w.Buy(ctx, "book")
	if e.GatewayEnt.KXKey.ProbeOAEP(ctx, crypto.SHA256, crypto.SHA256) == nil {
		require.NoError(t, err)
		assert.True(t, r.Approved())
		return
	}
	requireRefused(t, err, setpb.Reason_DECRYPT_FAILED)
	var o *store.Order
	require.NoError(t, e.MerchantDB.View(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		o, err = tx.GetOrder(ctx, lastXID(t, e))
		return err
	}))
	assert.Equal(t, merchant.StateRefused, o.State, "a refusal is a decided, recorded outcome")
}

func lastXID(t *testing.T, e *env) string {
	t.Helper()
	var xid string
	for _, m := range e.merRec.Requests() {
		if p, ok := m.(*setpb.PurchaseRequest); ok {
			oi, err := setproto.ParseOrderInfo(p.GetOrderInfo())
			require.NoError(t, err)
			xid = oi.GetXid()
		}
	}
	return xid
}
