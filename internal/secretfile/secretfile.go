// Package secretfile reads and writes files that hold secrets (token PINs,
// enrollment secrets, passphrases, sealed wallet files): written 0600 through a
// temporary file and a rename, so a reader sees the old or the new content and
// never a half-written one; read only if neither group nor others may access
// them, and only up to a bound.
package secretfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Mode is the permission of every file this package writes.
const Mode fs.FileMode = 0o600

// ErrPermissions is returned for a secret file that group or others may access.
var ErrPermissions = errors.New("secret file is accessible by group or others")

// Read returns the content of the secret file at path, at most max bytes. It
// refuses a file that is not regular or whose mode grants group or others any
// access, naming the path and the mode (never the content).
func Read(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := Check(path, st); err != nil {
		return nil, err
	}
	if st.Size() > max {
		return nil, fmt.Errorf("secret file %s: %d bytes, more than %d", path, st.Size(), max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("secret file %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("secret file %s: more than %d bytes", path, max)
	}
	return b, nil
}

// Check refuses st (of the file at path) unless it is a regular file that only
// its owner may access.
func Check(path string, st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return fmt.Errorf("secret file %s is not a regular file (%v)", path, st.Mode().Type())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o; chmod 600 it: %w", path, perm, ErrPermissions)
	}
	return nil
}

// Write replaces the file at path with data, mode 0600, atomically: data goes
// to a temporary file in the same directory, is synced, and renamed over path.
func Write(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(name)
		}
	}()
	if err := tmp.Chmod(Mode); err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	ok = true
	return nil
}

// Create writes data to a new file at path, mode 0600, refusing to replace an
// existing file (for a secret the caller must not overwrite by mistake).
func Create(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, Mode)
	if err != nil {
		return fmt.Errorf("secret file: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	return nil
}
