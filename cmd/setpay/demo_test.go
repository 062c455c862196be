package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDemoRefusesADirectoryItDidNotMake: `setpay demo --var DIR`, where DIR holds a
// real token directory (the CA's root and CA keys), exits 1 and deletes nothing.
func TestDemoRefusesADirectoryItDidNotMake(t *testing.T) {
	dir := t.TempDir()
	r := runSetpay(t, dir, nil, "hsm", "init-softhsm", "--softhsm-dir", "./var/softhsm", "--tokens", "setpay-root,setpay-ca")
	require.Zero(t, r.code, "%s", r)
	tokens := filepath.Join(dir, "var", "softhsm", "tokens")
	before, err := os.ReadDir(tokens)
	require.NoError(t, err)
	require.Len(t, before, 2, "two token directories")

	for _, args := range [][]string{{"demo", "--var", "./var"}, {"demo", "--var", filepath.Join(dir, "var")}} {
		r = runSetpay(t, dir, nil, args...)
		assert.Equal(t, 1, r.code, "%s", r)
		assert.Contains(t, r.stderr, "refusing to reset")
		assert.Contains(t, r.stderr, demoMarker)
		after, err := os.ReadDir(tokens)
		require.NoError(t, err, "the token directory is still there")
		assert.Equal(t, len(before), len(after))
		assert.FileExists(t, filepath.Join(dir, "var", "softhsm", "user-pin"))
		assert.NoFileExists(t, filepath.Join(dir, "var", demoMarker), "the refused directory is not claimed")
	}
	l := runSetpay(t, dir, nil, "hsm", "list", "--softhsm-dir", "./var/softhsm")
	require.Zero(t, l.code, "%s", l)
	assert.Contains(t, l.stdout, "setpay-root")
	assert.Contains(t, l.stdout, "setpay-ca")
}

// TestResetDemoDir: a new or empty directory is claimed, a claimed one loses only the
// demo's own files, anything else is left alone.
func TestResetDemoDir(t *testing.T) {
	t.Run("new", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "a", "b")
		require.NoError(t, resetDemoDir(root))
		assert.FileExists(t, filepath.Join(root, demoMarker))
	})
	t.Run("empty", func(t *testing.T) {
		root := t.TempDir()
		require.NoError(t, resetDemoDir(root))
		assert.FileExists(t, filepath.Join(root, demoMarker))
	})
	t.Run("marked", func(t *testing.T) {
		root := t.TempDir()
		require.NoError(t, resetDemoDir(root))
		require.NoError(t, os.MkdirAll(filepath.Join(root, "softhsm", "tokens"), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(root, "gateway.db"), []byte("x"), 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(root, "notes.txt"), []byte("mine"), 0o600))
		require.NoError(t, resetDemoDir(root))
		assert.NoDirExists(t, filepath.Join(root, "softhsm"))
		assert.NoFileExists(t, filepath.Join(root, "gateway.db"))
		assert.FileExists(t, filepath.Join(root, "notes.txt"), "not the demo's: kept")
	})
	t.Run("unmarked", func(t *testing.T) {
		root := t.TempDir()
		require.NoError(t, os.MkdirAll(filepath.Join(root, "softhsm", "tokens"), 0o700))
		require.Error(t, resetDemoDir(root))
		assert.DirExists(t, filepath.Join(root, "softhsm", "tokens"))
	})
	t.Run("marker is a directory", func(t *testing.T) {
		root := t.TempDir()
		require.NoError(t, os.MkdirAll(filepath.Join(root, demoMarker), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(root, "gateway.db"), []byte("x"), 0o600))
		require.Error(t, resetDemoDir(root))
		assert.FileExists(t, filepath.Join(root, "gateway.db"))
	})
}
