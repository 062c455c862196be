package hsm_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
)

// Issue 12 finding 9: a PIN file that group or others may read is refused, with
// an error naming the path and the mode, never the PIN.
func TestPINFilePermissions(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "pin-0644")
	require.NoError(t, os.WriteFile(open, []byte("918273\n"), 0o600))
	require.NoError(t, os.Chmod(open, 0o644))
	_, err := hsm.PINSource("file:" + open).Resolve()
	require.Error(t, err)
	assert.ErrorIs(t, err, hsm.ErrPINSource)
	assert.Contains(t, err.Error(), open)
	assert.Contains(t, err.Error(), "0644")
	assert.NotContains(t, err.Error(), "918273")

	private := filepath.Join(dir, "pin-0600")
	require.NoError(t, os.WriteFile(private, []byte("918273\n"), 0o600))
	pin, err := hsm.PINSource("file:" + private).Resolve()
	require.NoError(t, err)
	assert.Equal(t, "918273", pin)
}
