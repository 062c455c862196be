// Package softhsm sets up SoftHSM2 as setpay's development and CI token: it finds the
// module, lays out a self-contained token directory with its own softhsm2.conf, and
// initialises tokens through PKCS#11 itself (C_InitToken, C_InitPIN), so library code
// never shells out to softhsm2-util.
//
// SoftHSM reads SOFTHSM2_CONF once per process, at C_Initialize. Everything here is
// therefore built around one token directory per process: call Dir.Activate before the
// module is first opened, and give each token its own label.
package softhsm

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/setpay/setpay/hsm"
)

// ModuleEnv names the environment variable that overrides where the PKCS#11 module is.
const ModuleEnv = "SETPAY_PKCS11_MODULE"

// InstallHint is the one command that brings SoftHSM2 onto a Debian or Ubuntu machine.
const InstallHint = "apt-get install -y softhsm2 (or run scripts/install-deps.sh as root)"

// candidatePaths lists where distributions put libsofthsm2.so.
func candidatePaths() []string {
	paths := []string{
		"/usr/lib/softhsm/libsofthsm2.so",                     // Debian, Ubuntu
		"/usr/lib/" + multiarch() + "/softhsm/libsofthsm2.so", // Debian multiarch
		"/usr/lib64/pkcs11/libsofthsm2.so",                    // Fedora, RHEL
		"/usr/lib64/softhsm/libsofthsm.so",                    // older RHEL
		"/usr/local/lib/softhsm/libsofthsm2.so",               // source builds
		"/opt/homebrew/lib/softhsm/libsofthsm2.so",            // macOS (Apple silicon)
		"/usr/local/opt/softhsm/lib/softhsm/libsofthsm2.so",   // macOS (Intel)
		"/usr/lib/" + multiarch() + "/pkcs11/libsofthsm2.so",  // some Ubuntu releases
	}
	return paths
}

func multiarch() string {
	switch runtime.GOARCH {
	case "arm64":
		return "aarch64-linux-gnu"
	default:
		return "x86_64-linux-gnu"
	}
}

// FindModule returns the path of the SoftHSM2 PKCS#11 module: $SETPAY_PKCS11_MODULE when
// set, else the first of the usual install locations that exists.
func FindModule() (string, error) {
	if p := os.Getenv(ModuleEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("softhsm: %s=%s: %w", ModuleEnv, p, err)
		}
		return p, nil
	}
	for _, p := range candidatePaths() {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("softhsm: libsofthsm2.so not found (set %s or install it: %s): %w",
		ModuleEnv, InstallHint, ErrModuleNotFound)
}

// ErrModuleNotFound reports that no SoftHSM2 module is installed.
var ErrModuleNotFound = errors.New("SoftHSM2 module not found")

// Dir is a self-contained SoftHSM2 token directory: <root>/tokens holds the token
// files and <root>/softhsm2.conf points at them.
type Dir struct {
	Root string
}

// ConfPath is the softhsm2.conf of this directory.
func (d Dir) ConfPath() string { return filepath.Join(d.Root, "softhsm2.conf") }

// TokensPath is where SoftHSM keeps the token files.
func (d Dir) TokensPath() string { return filepath.Join(d.Root, "tokens") }

// Create makes the directory and its configuration; it is idempotent.
func Create(root string) (Dir, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return Dir{}, fmt.Errorf("softhsm: token dir %s: %w", root, err)
	}
	d := Dir{Root: abs}
	if err := os.MkdirAll(d.TokensPath(), 0o700); err != nil {
		return Dir{}, fmt.Errorf("softhsm: create token dir: %w", err)
	}
	conf := fmt.Sprintf("# written by setpay\ndirectories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
		d.TokensPath())
	if err := os.WriteFile(d.ConfPath(), []byte(conf), 0o600); err != nil {
		return Dir{}, fmt.Errorf("softhsm: write %s: %w", d.ConfPath(), err)
	}
	return d, nil
}

// Activate points SoftHSM at this directory for the rest of the process. It must run
// before the module's first C_Initialize, because SoftHSM reads SOFTHSM2_CONF only then.
func (d Dir) Activate() error {
	if err := os.Setenv("SOFTHSM2_CONF", d.ConfPath()); err != nil {
		return fmt.Errorf("softhsm: set SOFTHSM2_CONF: %w", err)
	}
	return nil
}

// PINFile is where a dev token's user PIN is kept inside the directory (mode 0600),
// so tools can name it as pin-source=file:... instead of passing the PIN around.
func (d Dir) PINFile() string { return filepath.Join(d.Root, "user-pin") }

// EnsurePIN returns the dev user PIN, creating a random one in PINFile on first use.
func (d Dir) EnsurePIN() (string, error) {
	if b, err := os.ReadFile(d.PINFile()); err == nil && len(b) > 0 {
		return string(b), nil
	}
	pin := rand.Text()[:16]
	if err := os.WriteFile(d.PINFile(), []byte(pin), 0o600); err != nil {
		return "", fmt.Errorf("softhsm: write PIN file: %w", err)
	}
	return pin, nil
}

// InitToken creates a token labelled label in this directory with user PIN userPIN. The
// SO PIN is random and discarded: dev tokens are thrown away, never administered.
func InitToken(mod *hsm.Module, label, userPIN string) error {
	so := rand.Text()
	if _, err := mod.InitToken(label, so, userPIN); err != nil {
		return fmt.Errorf("softhsm: %w", err)
	}
	return nil
}
