package hsm

import (
	"fmt"
	"os"
	"strings"

	"github.com/setpay/setpay/internal/secretfile"
)

// PINSource says where a token PIN comes from: "env:NAME" reads the environment
// variable NAME, "file:/path" (or a bare path) reads the first line of a file. PINs are
// never taken from a command line, a URI's pin-value or a configuration file's body,
// because those end up in shell history, process listings and logs.
type PINSource string

// Resolve reads the PIN. Errors name the source, never the PIN.
func (s PINSource) Resolve() (string, error) {
	src := strings.TrimSpace(string(s))
	switch {
	case src == "":
		return "", fmt.Errorf("hsm: no PIN source configured (use env:NAME or file:/path): %w", ErrPINSource)
	case strings.HasPrefix(src, "env:"):
		name := strings.TrimPrefix(src, "env:")
		pin, ok := os.LookupEnv(name)
		if !ok || pin == "" {
			return "", fmt.Errorf("hsm: PIN environment variable %s is not set: %w", name, ErrPINSource)
		}
		return pin, nil
	default:
		path := strings.TrimPrefix(src, "file:")
		// Refuses a PIN file group or others may read, naming path and mode.
		b, err := secretfile.Read(path, maxPINFileSize)
		if err != nil {
			return "", fmt.Errorf("hsm: read PIN file %s: %w", path, errJoinSource(err))
		}
		pin, _, _ := strings.Cut(string(b), "\n")
		pin = strings.TrimRight(pin, "\r")
		if pin == "" {
			return "", fmt.Errorf("hsm: PIN file %s is empty: %w", path, ErrPINSource)
		}
		return pin, nil
	}
}

// maxPINFileSize bounds a PIN file (a PIN is a line; PKCS#11 PINs are short).
const maxPINFileSize = 4096

func errJoinSource(err error) error { return fmt.Errorf("%w: %w", ErrPINSource, err) }
