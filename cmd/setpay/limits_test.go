package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/setproto/setpb"
)

func TestLimitsConfig(t *testing.T) {
	cases := []struct {
		name    string
		yaml    string
		wantMax int
		rate    float64
		bad     bool
	}{
		{"defaults", "listen: x\n", 4 << 20, 0, false},
		{"all set", "limits:\n  max_message_bytes: 65536\n  max_concurrent_streams: 8\n  rate_per_second: 50\n  rate_burst: 100\n  rate_max_clients: 1000\n", 65536, 50, false},
		{"negative rate refused", "limits:\n  rate_per_second: -1\n", 4 << 20, -1, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "gw.yaml")
			require.NoError(t, os.WriteFile(path, []byte(c.yaml), 0o600))
			var cfg gatewayConfig
			require.NoError(t, loadYAML(path, &cfg))
			detail := &setpb.ErrorDetail{Reason: setpb.Reason_GATEWAY_UNAVAILABLE}
			sl := cfg.Limits.serverLimits(detail)
			assert.Equal(t, c.wantMax, sl.MaxRecvMsgBytes)
			assert.Equal(t, c.rate, sl.Rate.Rate)
			assert.Equal(t, detail, sl.Rate.Detail, "a rate-limited merchant reads GATEWAY_UNAVAILABLE and may retry")
			_, _, err := tlsrpc.NewGRPCServerWithLimits(nil, sl)
			if c.bad {
				assert.Error(t, err)
			} else {
				assert.NoError(t, err)
			}
		})
	}
	var cfg gatewayConfig
	path := filepath.Join(t.TempDir(), "typo.yaml")
	require.NoError(t, os.WriteFile(path, []byte("limits:\n  rate_per_secnod: 5\n"), 0o600))
	assert.Error(t, loadYAML(path, &cfg), "a misspelt limit is an error, not silently ignored")
}

// TestDemoConfigsCarryLimits: the configs `setpay demo` writes limit the message
// size, the streams and the rate per client of both services (a rate of 0 means no
// limit, what they shipped with before).
func TestDemoConfigsCarryLimits(t *testing.T) {
	gw, mer := demoLimits()
	for name, l := range map[string]limitsConfig{"gateway": gw, "merchant": mer} {
		t.Run(name, func(t *testing.T) {
			assert.Positive(t, l.RatePerSecond)
			assert.Positive(t, l.RateBurst)
			assert.Positive(t, l.RateMaxClients)
			assert.Positive(t, l.MaxConcurrentStreams)
			assert.Positive(t, l.MaxMessageBytes)
			assert.Less(t, l.MaxMessageBytes, 4<<20, "below gRPC's default")
			_, _, err := tlsrpc.NewGRPCServerWithLimits(nil, l.serverLimits(nil))
			assert.NoError(t, err)
		})
	}
	assert.Less(t, mer.RatePerSecond, gw.RatePerSecond, "a wallet host may ask less of the merchant than a merchant of the gateway")
}
