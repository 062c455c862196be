package interop_test

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system/systemtest"
	"github.com/setpay/setpay/wallet"
)

// lyingGateway answers Authorize with whatever answer says; nil answer passes the
// call on to the real gateway.
type lyingGateway struct {
	setpb.GatewayClient
	mu     sync.Mutex
	answer func(in *setpb.Enveloped) *setpb.Enveloped
}

func (g *lyingGateway) Authorize(ctx context.Context, in *setpb.Enveloped, opts ...grpc.CallOption) (*setpb.Enveloped, error) {
	g.mu.Lock()
	a := g.answer
	g.mu.Unlock()
	if a == nil {
		return g.GatewayClient.Authorize(ctx, in, opts...)
	}
	return a(in), nil
}

func (g *lyingGateway) set(a func(in *setpb.Enveloped) *setpb.Enveloped) {
	g.mu.Lock()
	g.answer = a
	g.mu.Unlock()
}

// testHostileGateway: the merchant is the client of the gateway, and a gateway (or
// whatever answers at its address) may send anything back. Every bad answer reaches
// the wallet as GATEWAY_UNAVAILABLE, the order stays pending, and the same request,
// retried once the real gateway answers, completes exactly once.
func testHostileGateway(t *testing.T, b *bed) {
	ctx := context.Background()
	gw := &lyingGateway{GatewayClient: setpb.NewGatewayClient(b.GatewayConn)}
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "mer2.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	m, err := b.NewMerchant(ctx, b.MerchantEnt, db, gw)
	require.NoError(t, err)
	gs, _ := tlsrpc.NewGRPCServer(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{b.MerchantTLS.TLSCertificate()}}, 4<<20)
	m.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(nil, b.TLS.Pool(), "127.0.0.1"))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	w, err := wallet.New(wallet.Config{Identity: b.Cardholders[systemtest.Frank].Identity, Trust: b.NewTrust(), Merchant: setpb.NewMerchantClient(conn), Brand: "SETPay"})
	require.NoError(t, err)

	s, err := w.Start(ctx, "book")
	require.NoError(t, err)
	req, err := w.Prepare(s)
	require.NoError(t, err)

	// A real answer of the gateway, to another request, to replay.
	b.buy(t, systemtest.Alice, "book")
	var replayed []byte
	for _, r := range b.gwRec.Responses() {
		if env := r.(*setpb.Enveloped).GetCms(); envelopeKind(t, env) == setpb.ContentKind_AUTH_RESPONSE {
			replayed = env
		}
	}
	require.NotNil(t, replayed)

	merchantSigned, err := setproto.SignMessage(setpb.ContentKind_AUTH_RESPONSE, &setpb.AuthResponse{Xid: s.OI.GetXid(), Result: setpb.AuthResult_APPROVED},
		b.MerchantEnt.Sign, time.Now(), b.MerchantEnt.Sign.Certificates())
	require.NoError(t, err)
	sealTo := func(inner []byte) []byte {
		env, err := setproto.Seal(setpb.ContentKind_AUTH_RESPONSE, inner, b.MerchantEnt.KXCert, setproto.EnvelopeOptions{})
		require.NoError(t, err)
		return env
	}
	answers := map[string][]byte{
		"empty":          nil,
		"deeply nested":  nestedDER(40_000),
		"over the limit": make([]byte, setproto.MaxMessageSize+1),
		"envelope to the gateway itself": func() []byte {
			e, _ := setproto.Seal(setpb.ContentKind_AUTH_RESPONSE, merchantSigned, b.GatewayEnt.KXCert, setproto.EnvelopeOptions{})
			return e
		}(),
		"answer signed by the merchant":           sealTo(merchantSigned),
		"garbage inside the envelope":             sealTo(nestedDER(100)),
		"the gateway's answer to another request": replayed,
	}
	for name, a := range answers {
		t.Run(name, func(t *testing.T) {
			gw.set(func(*setpb.Enveloped) *setpb.Enveloped { return &setpb.Enveloped{Cms: a} })
			_, err := w.Send(ctx, s, req)
			requireRefused(t, err, setpb.Reason_GATEWAY_UNAVAILABLE)
			var o *store.Order
			require.NoError(t, db.View(ctx, func(ctx context.Context, tx store.Tx) error {
				o, err = tx.GetOrder(ctx, s.OI.GetXid())
				return err
			}))
			assert.Equal(t, merchant.StatePending, o.State, "nothing decided")
		})
	}
	gw.set(nil)
	r, err := w.Send(ctx, s, req)
	require.NoError(t, err, "the same request completes once the real gateway answers")
	assert.Equal(t, setpb.AuthResult_APPROVED, r.Result)
}
