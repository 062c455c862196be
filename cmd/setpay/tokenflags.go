package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/softhsm"
)

// tokenFlags select a module, a token and a PIN source. With --softhsm-dir the module
// is SoftHSM2 pointed at that directory and the PIN comes from the directory's PIN file,
// so a dev setup needs no other flag; a real HSM sets --module, --token, --pin-source.
type tokenFlags struct {
	module     string
	token      string
	pinSource  string
	softhsmDir string
}

// tokenFlagsOn registers the token flags on fs.
func tokenFlagsOn(fs *flagSet) *tokenFlags {
	f := &tokenFlags{}

	fs.StringVar(&f.module, "module", "", "PKCS#11 module path (default: $SETPAY_PKCS11_MODULE, else SoftHSM2)")
	fs.StringVar(&f.token, "token", "", "token label")
	fs.StringVar(&f.pinSource, "pin-source", "", "where the user PIN comes from: env:NAME or file:/path (default env:SETPAY_PIN)")
	fs.StringVar(&f.softhsmDir, "softhsm-dir", "", "the SoftHSM2 dev token directory made by 'setpay hsm init-softhsm' (sets SOFTHSM2_CONF, the module and the PIN source)")
	return f
}

// resolve fills the defaults and, for a SoftHSM dir, points the process at it (SoftHSM
// reads its config once, at the module's first C_Initialize).
func (f *tokenFlags) resolve() error {
	if f.pinSource != "" {
		if err := checkSecretSource(f.pinSource); err != nil {
			return usageErrorf("--pin-source: %w", err)
		}
	}
	if f.softhsmDir != "" {
		d := softhsm.Dir{Root: mustAbs(f.softhsmDir)}
		if err := d.Activate(); err != nil {
			return err
		}
		if f.pinSource == "" {
			f.pinSource = "file:" + d.PINFile()
		}
	}
	if f.module == "" {
		p, err := softhsm.FindModule()
		if err != nil {
			return err
		}
		f.module = p
	}
	if f.pinSource == "" {
		f.pinSource = "env:SETPAY_PIN"
	}
	return nil
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// open resolves the flags and opens the module and the token.
func (f *tokenFlags) open(ctx context.Context, env *cliEnv) (*hsm.Module, *hsm.Token, error) {
	if err := f.resolve(); err != nil {
		return nil, nil, err
	}
	if f.token == "" {
		return nil, nil, usageErrorf("--token is required")
	}
	return openToken(ctx, env, f.module, f.token, hsm.PINSource(f.pinSource), 0)
}

// openToken opens a module and one of its tokens. Every command and every service
// opens its token here, so an operator reads the same error from `setpay hsm list`
// as from a service whose configuration names the same module, token and PIN.
func openToken(ctx context.Context, env *cliEnv, module, label string, pin hsm.PINSource, maxSessions int) (*hsm.Module, *hsm.Token, error) {
	mod, err := hsm.OpenModule(module, env.logger)
	if err != nil {
		return nil, nil, softhsmHint(module, err)
	}
	tok, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: label}, PIN: pin, MaxSessions: maxSessions, Logger: env.logger})
	if err != nil {
		_ = mod.Close()
		return nil, nil, softhsmHint(module, err)
	}
	return mod, tok, nil
}

// softhsmHint adds to a SoftHSM error that SOFTHSM2_CONF is unset: SoftHSM then reads
// the system-wide configuration, whose token directory rarely holds the tokens meant.
func softhsmHint(module string, err error) error {
	if strings.Contains(filepath.Base(module), "softhsm") && os.Getenv("SOFTHSM2_CONF") == "" {
		return fmt.Errorf("%w (SOFTHSM2_CONF is not set, so SoftHSM used its system-wide configuration; "+
			"export SOFTHSM2_CONF=<dir>/softhsm2.conf or use --softhsm-dir)", err)
	}
	return err
}
