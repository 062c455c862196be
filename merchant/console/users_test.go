package console_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/setpay/setpay/merchant/console"
)

// TestParseUsersRefusals: a users file line that is not name:bcrypt-hash is refused
// naming its line, never showing the hash.
func TestParseUsersRefusals(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("a long enough password"), bcrypt.MinCost)
	require.NoError(t, err)
	h := string(hash)
	for name, tc := range map[string]struct{ data, want string }{
		"no colon":   {"ops\n", "line 1: want name:bcrypt-hash"},
		"bad name":   {"# c\n\nop s:" + h + "\n", "line 3: name: want 1..64 characters"},
		"not bcrypt": {"ops:plain-password\n", "line 1 (ops): not a bcrypt hash"},
		"twice":      {"ops:" + h + "\nops:" + h + "\n", "line 2: ops is listed twice"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := console.ParseUsers([]byte(tc.data))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "$2a$")
			assert.NotContains(t, err.Error(), "plain-password")
		})
	}
	u, err := console.ParseUsers([]byte("# operators\nops:" + h + "\n\n"))
	require.NoError(t, err)
	assert.Len(t, u, 1)
}

// TestSetUserRefusesReadableFile: SetUser writes 0600, keeps other users, and refuses
// a file group or others may read without changing it.
func TestSetUserRefusesReadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	replaced, err := console.SetUser(path, "ops", []byte("first password here"))
	require.NoError(t, err)
	assert.False(t, replaced)
	_, err = console.SetUser(path, "ops", []byte("short"))
	assert.ErrorContains(t, err, "password: want at least 12 characters")
	require.NoError(t, os.Chmod(path, 0o640))
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	_, err = console.SetUser(path, "ops-2", []byte("second password here"))
	assert.ErrorContains(t, err, "chmod 600")
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after, "nothing written")
}
