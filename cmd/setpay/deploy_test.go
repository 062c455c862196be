package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/internal/testenv"
)

// unitBinary is where the shipped systemd units expect the binary.
const unitBinary = "/usr/local/bin/setpay"

// TestSystemdUnitsVerify checks the systemd unit examples in deploy/systemd (the CA,
// gateway, merchant and signer) with `systemd-analyze verify`, on copies whose
// ExecStart names the built binary (verify requires the command to exist), and that
// each keeps the hardening and the PIN handling the operator conventions ask for.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze := testenv.Tool(t, "systemd-analyze")
	if analyze == "" {
		return
	}
	bin, _ := setpayBinary(t)
	units, err := filepath.Glob("../../deploy/systemd/*.service")
	require.NoError(t, err)
	var names []string
	for _, u := range units {
		names = append(names, filepath.Base(u))
	}
	require.ElementsMatch(t, []string{"setpay-ca.service", "setpay-gateway.service", "setpay-merchant.service", "setpay-signer.service"}, names)

	dir := t.TempDir()
	for _, u := range units {
		name := filepath.Base(u)
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(u)
			require.NoError(t, err)
			text := string(b)
			require.Contains(t, text, "ExecStart="+unitBinary+" ", "ExecStart runs the installed binary")
			for _, want := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
				"DynamicUser=yes", "ReadWritePaths=", "CapabilityBoundingSet=\n", "LoadCredential=pin:", "Restart=on-failure"} {
				assert.Contains(t, text, want)
			}
			// The PIN comes from the credential only: never a value in the unit.
			for _, bad := range []string{"pin-value", "SETPAY_PIN=", "PIN=", "--pin-source env:", "Environment=SETPAY"} {
				assert.NotContains(t, text, bad)
			}
			copyPath := filepath.Join(dir, name)
			require.NoError(t, os.WriteFile(copyPath, []byte(strings.ReplaceAll(text, unitBinary, bin)), 0o600))
			out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
			require.NoError(t, err, "systemd-analyze verify %s:\n%s", name, out)
			// verify exits 0 on lines it ignores; those are mistakes too.
			assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify %s", name)
		})
	}
}
