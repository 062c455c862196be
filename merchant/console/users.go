package console

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/setpay/setpay/internal/secretfile"
)

// A users file holds the console's operators, one a line: `name:bcrypt-hash`. Blank
// lines and lines starting with # are ignored. It is a secret file (mode 0600,
// internal/secretfile): a hash lets its reader guess passwords offline.

// maxUsersFile bounds a users file.
const maxUsersFile = 1 << 20

// Password length bounds: bcrypt reads at most 72 bytes.
const (
	MinPasswordLen = 12
	MaxPasswordLen = 72
)

// Users maps operator names to bcrypt hashes.
type Users map[string][]byte

// CheckUserName refuses a name that cannot be a users-file entry: 1..64 characters
// of [A-Za-z0-9._@-].
func CheckUserName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("want 1..64 characters of [A-Za-z0-9._@-], got %d characters", len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '@') {
			return fmt.Errorf("want 1..64 characters of [A-Za-z0-9._@-], got %q", name)
		}
	}
	return nil
}

// ParseUsers reads a users file's content. Its errors name the line, never its hash.
func ParseUsers(data []byte) (Users, error) {
	u := Users{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: want name:bcrypt-hash", n)
		}
		if err := CheckUserName(name); err != nil {
			return nil, fmt.Errorf("line %d: name: %w", n, err)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d (%s): not a bcrypt hash (make entries with setpay merchant console-user)", n, name)
		}
		if _, dup := u[name]; dup {
			return nil, fmt.Errorf("line %d: %s is listed twice", n, name)
		}
		u[name] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return u, nil
}

// LoadUsers reads the users file at path, refusing one that group or others may
// read.
func LoadUsers(path string) (Users, error) {
	b, err := secretfile.Read(path, maxUsersFile)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	u, err := ParseUsers(b)
	if err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return u, nil
}

// CheckPassword refuses a password the console does not accept.
func CheckPassword(pw []byte) error {
	switch {
	case len(pw) < MinPasswordLen:
		return fmt.Errorf("want at least %d characters, got %d", MinPasswordLen, len(pw))
	case len(pw) > MaxPasswordLen:
		return fmt.Errorf("want at most %d bytes (bcrypt reads no more), got %d", MaxPasswordLen, len(pw))
	}
	return nil
}

// SetUser adds name with password to the users file at path, or replaces its
// password; a file that does not exist is made. It writes 0600 atomically
// (secretfile.Write) and refuses an existing file that group or others may read. It
// says whether name was there before.
func SetUser(path, name string, password []byte) (replaced bool, err error) {
	if err := CheckUserName(name); err != nil {
		return false, fmt.Errorf("name: %w", err)
	}
	if err := CheckPassword(password); err != nil {
		return false, fmt.Errorf("password: %w", err)
	}
	u := Users{}
	if _, err := os.Stat(path); err == nil {
		if u, err = LoadUsers(path); err != nil {
			return false, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("users file: %w", err)
	}
	hash, err := bcrypt.GenerateFromPassword(password, bcrypt.DefaultCost)
	if err != nil {
		return false, fmt.Errorf("password: %w", err)
	}
	_, replaced = u[name]
	u[name] = hash
	names := make([]string, 0, len(u))
	for n := range u {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	b.WriteString("# setpay merchant console users (name:bcrypt-hash); add with setpay merchant console-user\n")
	for _, n := range names {
		fmt.Fprintf(&b, "%s:%s\n", n, u[n])
	}
	if err := secretfile.Write(path, b.Bytes()); err != nil {
		return false, err
	}
	return replaced, nil
}
