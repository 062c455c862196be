package bench

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunPurchaseReportsTheWholeMoneyPath runs real purchases on a real SET system
// and checks the report: purchases made, no errors, the token operations each
// purchase needs on each token, a token-bound limit, and no session or object growth.
func TestRunPurchaseReportsTheWholeMoneyPath(t *testing.T) {
	rep, err := RunPurchase(context.Background(), PurchaseConfig{
		Concurrency: []int{1, 2}, Duration: 300 * time.Millisecond, Logger: quiet,
	})
	require.NoError(t, err)
	require.Len(t, rep.Results, 2)
	assert.Positive(t, rep.TokenRates["sign CKM_ECDSA"])
	assert.Positive(t, rep.TokenRates["decrypt CKM_RSA_PKCS_OAEP"])
	for _, r := range rep.Results {
		assert.Positive(t, r.Purchases, "c=%d", r.Concurrency)
		assert.Empty(t, r.Errors, "c=%d", r.Concurrency)
		assert.Positive(t, r.LimitPerSec)
		assert.InDelta(t, r.PurchasesPerSec/r.LimitPerSec, r.Ratio, 1e-9)
		for _, step := range purchaseSteps {
			s := r.Steps[step]
			assert.Positive(t, s.P50us, step)
			assert.LessOrEqual(t, s.P50us, s.P99us, step)
		}
		// The gateway opens two envelopes (authorization request, PI) and signs; the
		// wallet makes the dual signature; the merchant signs and opens the answer.
		gw := r.OpsPerPurchase["bench-gateway"]
		assert.Equal(t, 2.0, gw["decrypt CKM_RSA_PKCS_OAEP"], "%v", gw)
		assert.GreaterOrEqual(t, gw["sign CKM_ECDSA"], 1.0, "%v", gw)
		assert.Equal(t, 1.0, r.OpsPerPurchase["bench-wallet"]["sign CKM_ECDSA"])
		assert.Equal(t, 1.0, r.OpsPerPurchase["bench-merchant"]["decrypt CKM_RSA_PKCS_OAEP"])
		assert.LessOrEqual(t, r.SessionsEnd, r.SessionsStart+int64(r.Concurrency)*4, "sessions bounded")
		assert.Zero(t, r.TokenObjectsDiff, "no objects left behind on the tokens")
	}
	out := t.TempDir() + "/p.json"
	require.NoError(t, rep.WriteJSON(out))
	require.NoError(t, WriteChart(t.TempDir()+"/p.svg", rep.PurchasePanels()))
}

func TestLuhnPANs(t *testing.T) {
	for _, n := range []int{0, 1, 7, 12345} {
		pan := luhnPAN(n)
		assert.Len(t, pan, 16)
		sum := 0
		for i := len(pan) - 1; i >= 0; i-- {
			d := int(pan[i] - '0')
			if (len(pan)-1-i)%2 == 1 {
				if d *= 2; d > 9 {
					d -= 9
				}
			}
			sum += d
		}
		assert.Zero(t, sum%10, pan)
	}
}
