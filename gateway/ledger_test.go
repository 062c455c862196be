package gateway

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/setproto/setpb"
)

func TestLedgerDecisions(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	l, err := NewLedger(make([]byte, 32), []Card{
		{PAN: "4111111111111111", Expiry: "203012", Currency: "EUR", Balance: 100_00, Limit: 50_00},
		{PAN: "5555555555554444", Expiry: "203012", Currency: "EUR", Balance: 100_00, Blocked: true},
		{PAN: "4012888888881881", Expiry: "202610", Currency: "EUR", Balance: 100_00},
	})
	require.NoError(t, err)
	tests := []struct {
		name, key, pan, expiry string
		amount                 int64
		currency               string
		want                   setpb.AuthResult
	}{
		{"approved", "k1", "4111111111111111", "203012", 40_00, "EUR", setpb.AuthResult_APPROVED},
		{"retry holds once", "k1", "4111111111111111", "203012", 40_00, "EUR", setpb.AuthResult_APPROVED},
		{"over the per-transaction limit", "k2", "4111111111111111", "203012", 60_00, "EUR", setpb.AuthResult_DECLINED_OVER_LIMIT},
		{"a second approval", "k3", "4111111111111111", "203012", 45_00, "EUR", setpb.AuthResult_APPROVED},
		{"now insufficient", "k4", "4111111111111111", "203012", 20_00, "EUR", setpb.AuthResult_DECLINED_INSUFFICIENT_FUNDS},
		{"blocked", "k5", "5555555555554444", "203012", 1_00, "EUR", setpb.AuthResult_DECLINED_BLOCKED_CARD},
		{"expired on file", "k6", "4012888888881881", "202610", 1_00, "EUR", setpb.AuthResult_DECLINED_EXPIRED_CARD},
		{"expiry differs from the issuer's", "k7", "4111111111111111", "203101", 1_00, "EUR", setpb.AuthResult_DECLINED_EXPIRED_CARD},
		{"unknown card", "k8", "6011111111111117", "203012", 1_00, "EUR", setpb.AuthResult_DECLINED_UNKNOWN_CARD},
		{"other currency", "k9", "4111111111111111", "203012", 1_00, "USD", setpb.AuthResult_DECLINED_UNKNOWN_CARD},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := l.Authorize(tt.key, tt.pan, tt.expiry, tt.amount, tt.currency, now)
			require.NoError(t, err)
			assert.Equal(t, tt.want, d.Result)
			if d.Result == setpb.AuthResult_APPROVED {
				assert.Len(t, d.AuthCode, 6)
			}
		})
	}
	bal, ok := l.Balance("4111111111111111")
	require.True(t, ok)
	assert.Equal(t, int64(100_00-40_00-45_00), bal)
}

func TestLedgerRefusesBadCards(t *testing.T) {
	for _, c := range []Card{
		{PAN: "4111111111111112", Expiry: "203012", Currency: "EUR"},
		{PAN: "4111111111111111", Expiry: "2030-12", Currency: "EUR"},
		{PAN: "4111111111111111", Expiry: "203012", Currency: "EURO"},
		{PAN: "4111111111111111", Expiry: "203012", Currency: "EUR", Balance: -1},
	} {
		_, err := NewLedger(make([]byte, 32), []Card{c})
		require.Error(t, err)
		assert.NotContains(t, err.Error(), c.PAN[6:12], "errors never carry the full PAN")
	}
	_, err := NewLedger(make([]byte, 8), nil)
	require.Error(t, err)
}
