package setproto_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWireProtocolImportsNoParty keeps the layering: the wire protocol is below the
// parties (and below the whole system wired in one process), never the other way.
func TestWireProtocolImportsNoParty(t *testing.T) {
	goTool, err := exec.LookPath("go")
	require.NoError(t, err, "the go tool runs this test, so it is on PATH")
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", "github.com/setpay/setpay/setproto/...").Output()
	require.NoError(t, err)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/setpay/setpay/cms", "the listing is the real dependency set")
	for _, forbidden := range []string{"gateway", "merchant", "wallet", "ca", "system", "signer", "store", "bench", "cmd/setpay"} {
		for _, d := range deps {
			p := "github.com/setpay/setpay/" + forbidden
			assert.False(t, d == p || strings.HasPrefix(d, p+"/"), "setproto depends on %s", d)
		}
	}
}
