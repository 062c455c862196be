package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Issue 12 finding 9: enrollment secrets and passphrases are read only from
// files their owner alone may read; the refusal names the path and the mode.
func TestReadSecretRefusesReadableFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "gw.secret")
	require.NoError(t, os.WriteFile(p, []byte("s3cr3t-enrollment\n"), 0o600))
	b, err := readSecret(p, "SETPAY_TEST_UNSET", "enrollment secret")
	require.NoError(t, err)
	assert.Equal(t, "s3cr3t-enrollment", string(b))

	require.NoError(t, os.Chmod(p, 0o640))
	_, err = readSecret(p, "SETPAY_TEST_UNSET", "enrollment secret")
	require.Error(t, err)
	assert.Contains(t, err.Error(), p)
	assert.Contains(t, err.Error(), "0640")
	assert.NotContains(t, err.Error(), "s3cr3t")
}
