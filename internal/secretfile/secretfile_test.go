package secretfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/internal/secretfile"
)

func TestReadRefusesGroupOrOtherAccess(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620, 0o660} {
		p := filepath.Join(dir, "pin-"+mode.String())
		require.NoError(t, os.WriteFile(p, []byte("1234\n"), mode))
		require.NoError(t, os.Chmod(p, mode)) // past the umask
		_, err := secretfile.Read(p, 100)
		require.Error(t, err, "mode %04o", mode)
		assert.ErrorIs(t, err, secretfile.ErrPermissions)
		assert.Contains(t, err.Error(), p)
		assert.Contains(t, err.Error(), "0"+strconvOct(mode))
		assert.NotContains(t, err.Error(), "1234")
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		p := filepath.Join(dir, "ok-"+mode.String())
		require.NoError(t, os.WriteFile(p, []byte("1234\n"), mode))
		b, err := secretfile.Read(p, 100)
		require.NoError(t, err, "mode %04o", mode)
		assert.Equal(t, "1234\n", string(b))
	}
	_, err := secretfile.Read(dir, 100)
	assert.ErrorContains(t, err, "not a regular file")
}

func strconvOct(m os.FileMode) string {
	const digits = "01234567"
	p := m.Perm()
	return string([]byte{digits[p>>6&7], digits[p>>3&7], digits[p&7]})
}

func TestReadBound(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s")
	require.NoError(t, os.WriteFile(p, make([]byte, 101), 0o600))
	_, err := secretfile.Read(p, 100)
	assert.ErrorContains(t, err, "more than 100")
}

func TestWriteIs0600AndAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "card.sealed")
	require.NoError(t, os.WriteFile(p, []byte("old"), 0o644))
	require.NoError(t, secretfile.Write(p, []byte("new")))
	st, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	b, err := secretfile.Read(p, 10)
	require.NoError(t, err)
	assert.Equal(t, "new", string(b))
	left, err := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	require.NoError(t, err)
	assert.Empty(t, left, "no temporary file left behind")

	q := filepath.Join(dir, "secret")
	require.NoError(t, secretfile.Create(q, []byte("s")))
	st, err = os.Stat(q)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	assert.Error(t, secretfile.Create(q, []byte("t")), "an existing secret is not overwritten")
}
