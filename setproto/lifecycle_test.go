package setproto_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
)

var h32 = setproto.Hash([]byte("x"))

// lifecycleSeeds are valid messages of every lifecycle kind.
func lifecycleSeeds() map[setpb.ContentKind]setproto.LifecycleRequest {
	return map[setpb.ContentKind]setproto.LifecycleRequest{
		setpb.ContentKind_CAPTURE_REQUEST: &setpb.CaptureRequest{Xid: "xid-1", Rrpid: "rr-1", MerchantId: "shop-1", MerchantKxThumbprint: h32,
			Amount: 100, Currency: "EUR", CaptureToken: []byte{1}, BatchId: "b-1"},
		setpb.ContentKind_AUTH_REVERSAL_REQUEST: &setpb.AuthReversalRequest{Xid: "xid-1", Rrpid: "rr-2", MerchantId: "shop-1", MerchantKxThumbprint: h32, Currency: "EUR"},
		setpb.ContentKind_CAPTURE_REVERSAL_REQUEST: &setpb.CaptureReversalRequest{Xid: "xid-1", Rrpid: "rr-3", MerchantId: "shop-1", MerchantKxThumbprint: h32,
			CaptureId: "rr-1", Amount: 50, Currency: "EUR"},
		setpb.ContentKind_CREDIT_REQUEST: &setpb.CreditRequest{Xid: "xid-1", Rrpid: "rr-4", MerchantId: "shop-1", MerchantKxThumbprint: h32, Amount: 10, Currency: "EUR"},
		setpb.ContentKind_CREDIT_REVERSAL_REQUEST: &setpb.CreditReversalRequest{Xid: "xid-1", Rrpid: "rr-5", MerchantId: "shop-1", MerchantKxThumbprint: h32,
			CreditId: "rr-4", Amount: 5, Currency: "EUR"},
		setpb.ContentKind_BATCH_ADMIN_REQUEST: &setpb.BatchAdminRequest{BatchId: "b-1", Rrpid: "rr-6", MerchantId: "shop-1", MerchantKxThumbprint: h32,
			Action: setpb.BatchAction_BATCH_CLOSE},
		setpb.ContentKind_GATEWAY_INQUIRY_REQUEST: &setpb.GatewayInquiryRequest{Xid: "xid-1", Rrpid: "rr-7", MerchantId: "shop-1", MerchantKxThumbprint: h32},
	}
}

func lifecycleResponseSeed() *setpb.LifecycleResponse {
	return &setpb.LifecycleResponse{RequestKind: setpb.ContentKind_CAPTURE_REQUEST, Rrpid: "rr-1", MerchantId: "shop-1", Xid: "xid-1",
		ItemId: "rr-1", Amount: 100, Currency: "EUR",
		Transaction: &setpb.TransactionState{Xid: "xid-1", Status: "captured", Amount: 100, AuthorizedAmount: 100, CapturedTotal: 100,
			Currency: "EUR", AuthCode: "123456", Items: []*setpb.Item{{Type: "capture", Id: "rr-1", Xid: "xid-1", Amount: 100, Currency: "EUR"}}},
		Batch: &setpb.BatchState{BatchId: "b-1", Status: "open", ItemCount: 1,
			Totals: []*setpb.BatchTotal{{Currency: "EUR", Type: "capture", Count: 1, Amount: 100}}}}
}

func TestLifecycleRequestsRoundTrip(t *testing.T) {
	for kind, m := range lifecycleSeeds() {
		b, err := setproto.Marshal(m)
		require.NoError(t, err)
		got, err := setproto.ParseLifecycleRequest(kind, b)
		require.NoError(t, err, "%s", kind)
		assert.True(t, proto.Equal(m, got))
		assert.Equal(t, kind, setproto.KindOf(got))
	}
	b, err := setproto.Marshal(lifecycleResponseSeed())
	require.NoError(t, err)
	_, err = setproto.ParseLifecycleResponse(b)
	require.NoError(t, err)
}

func TestLifecycleRequestsRefused(t *testing.T) {
	tests := []struct {
		name string
		m    setproto.LifecycleRequest
	}{
		{"no pair ID", &setpb.CreditRequest{Xid: "x", MerchantId: "shop-1", MerchantKxThumbprint: h32, Amount: 1, Currency: "EUR"}},
		{"negative amount", &setpb.CreditRequest{Xid: "x", Rrpid: "r", MerchantId: "shop-1", MerchantKxThumbprint: h32, Amount: -1, Currency: "EUR"}},
		{"zero capture", &setpb.CaptureRequest{Xid: "x", Rrpid: "r", MerchantId: "shop-1", MerchantKxThumbprint: h32, Currency: "EUR", CaptureToken: []byte{1}}},
		{"no token", &setpb.CaptureRequest{Xid: "x", Rrpid: "r", MerchantId: "shop-1", MerchantKxThumbprint: h32, Amount: 1, Currency: "EUR"}},
		{"bad currency", &setpb.CreditRequest{Xid: "x", Rrpid: "r", MerchantId: "shop-1", MerchantKxThumbprint: h32, Amount: 1, Currency: "eur"}},
		{"negative reversal", &setpb.AuthReversalRequest{Xid: "x", Rrpid: "r", MerchantId: "shop-1", MerchantKxThumbprint: h32, Amount: -5, Currency: "EUR"}},
		{"over the limit", &setpb.CreditRequest{Xid: "x", Rrpid: "r", MerchantId: "shop-1", MerchantKxThumbprint: h32, Amount: setproto.MaxAmount + 1, Currency: "EUR"}},
		{"no capture id", &setpb.CaptureReversalRequest{Xid: "x", Rrpid: "r", MerchantId: "shop-1", MerchantKxThumbprint: h32, Amount: 1, Currency: "EUR"}},
		{"bad batch id", &setpb.CreditRequest{Xid: "x", Rrpid: "r", MerchantId: "shop-1", MerchantKxThumbprint: h32, Amount: 1, Currency: "EUR", BatchId: "a b"}},
		{"no batch action", &setpb.BatchAdminRequest{BatchId: "b", Rrpid: "r", MerchantId: "shop-1", MerchantKxThumbprint: h32}},
		{"short thumbprint", &setpb.GatewayInquiryRequest{Xid: "x", Rrpid: "r", MerchantId: "shop-1", MerchantKxThumbprint: []byte{1}}},
		{"no xid", &setpb.GatewayInquiryRequest{Rrpid: "r", MerchantId: "shop-1", MerchantKxThumbprint: h32}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := setproto.ValidateLifecycleRequest(tt.m)
			require.Error(t, err)
			assert.Equal(t, setpb.Reason_MALFORMED, setproto.ReasonOf(err))
		})
	}
	// Bytes of one kind are not accepted as another (unknown fields).
	b, err := setproto.Marshal(lifecycleSeeds()[setpb.ContentKind_CAPTURE_REQUEST])
	require.NoError(t, err)
	_, err = setproto.ParseLifecycleRequest(setpb.ContentKind_GATEWAY_INQUIRY_REQUEST, b)
	assert.Error(t, err)
	_, err = setproto.ParseLifecycleRequest(setpb.ContentKind_AUTH_REQUEST, b)
	assert.Equal(t, setpb.Reason_UNSUPPORTED, setproto.ReasonOf(err))
}

func FuzzLifecycleParsers(f *testing.F) {
	for _, m := range lifecycleSeeds() {
		b, err := setproto.Marshal(m)
		require.NoError(f, err)
		f.Add(b)
	}
	for _, m := range []proto.Message{lifecycleResponseSeed(),
		&setpb.GatewayStoredAnswer{Error: &setpb.ErrorDetail{Reason: setpb.Reason_AMOUNT_EXCEEDED, Message: "no"}},
		&setpb.GatewayStoredAnswer{Envelope: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}} {
		b, err := setproto.Marshal(m)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, k := range setproto.LifecycleKinds {
			_, _ = setproto.ParseLifecycleRequest(k, b)
		}
		_, _ = setproto.ParseLifecycleResponse(b)
		_, _ = setproto.ParseGatewayStoredAnswer(b)
	})
}
