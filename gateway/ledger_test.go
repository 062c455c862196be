package gateway

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/setproto/setpb"
)

// ledgerCall is one Authorize call.
type ledgerCall struct {
	key, pan, expiry string
	amount           int64
	currency         string
}

func TestLedgerDecisions(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	cards := []Card{
		{PAN: "4111111111111111", Expiry: "203012", Currency: "EUR", Balance: 100_00, Limit: 50_00},
		{PAN: "5555555555554444", Expiry: "203012", Currency: "EUR", Balance: 100_00, Blocked: true},
		{PAN: "4012888888881881", Expiry: "202610", Currency: "EUR", Balance: 100_00},
	}
	visa := func(key string, amount int64) ledgerCall {
		return ledgerCall{key, "4111111111111111", "203012", amount, "EUR"}
	}
	// Each case starts from a fresh ledger, makes the calls of its history (each
	// must succeed), then the checked call: every subtest passes or fails alone.
	tests := []struct {
		name    string
		history []ledgerCall
		call    ledgerCall
		want    setpb.AuthResult
		balance int64 // of the first card afterwards
	}{
		{"approved", nil, visa("k1", 40_00), setpb.AuthResult_APPROVED, 60_00},
		{"retry holds once", []ledgerCall{visa("k1", 40_00)}, visa("k1", 40_00), setpb.AuthResult_APPROVED, 60_00},
		{"over the per-transaction limit", nil, visa("k2", 60_00), setpb.AuthResult_DECLINED_OVER_LIMIT, 100_00},
		{"a second approval", []ledgerCall{visa("k1", 40_00)}, visa("k3", 45_00), setpb.AuthResult_APPROVED, 15_00},
		{"now insufficient", []ledgerCall{visa("k1", 40_00), visa("k3", 45_00)}, visa("k4", 20_00),
			setpb.AuthResult_DECLINED_INSUFFICIENT_FUNDS, 15_00},
		{"blocked", nil, ledgerCall{"k5", "5555555555554444", "203012", 1_00, "EUR"}, setpb.AuthResult_DECLINED_BLOCKED_CARD, 100_00},
		{"expired on file", nil, ledgerCall{"k6", "4012888888881881", "202610", 1_00, "EUR"}, setpb.AuthResult_DECLINED_EXPIRED_CARD, 100_00},
		{"expiry differs from the issuer's", nil, ledgerCall{"k7", "4111111111111111", "203101", 1_00, "EUR"},
			setpb.AuthResult_DECLINED_EXPIRED_CARD, 100_00},
		{"unknown card", nil, ledgerCall{"k8", "6011111111111117", "203012", 1_00, "EUR"}, setpb.AuthResult_DECLINED_UNKNOWN_CARD, 100_00},
		{"other currency", nil, ledgerCall{"k9", "4111111111111111", "203012", 1_00, "USD"}, setpb.AuthResult_DECLINED_UNKNOWN_CARD, 100_00},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := NewLedger(make([]byte, 32), cards)
			require.NoError(t, err)
			var first Decision
			for i, c := range tt.history {
				d, err := l.Authorize(c.key, c.pan, c.expiry, c.amount, c.currency, now)
				require.NoError(t, err, "history call %d", i)
				if i == 0 {
					first = d
				}
			}
			c := tt.call
			d, err := l.Authorize(c.key, c.pan, c.expiry, c.amount, c.currency, now)
			require.NoError(t, err)
			assert.Equal(t, tt.want, d.Result)
			if d.Result == setpb.AuthResult_APPROVED {
				assert.Len(t, d.AuthCode, 6)
			}
			if len(tt.history) > 0 && tt.history[0].key == c.key {
				assert.Equal(t, first, d, "a retry gets the first decision")
			}
			bal, ok := l.Balance("4111111111111111")
			require.True(t, ok)
			assert.Equal(t, tt.balance, bal)
		})
	}
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
