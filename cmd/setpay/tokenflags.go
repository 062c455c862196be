package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

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
func tokenFlagsOn(fs *flag.FlagSet) *tokenFlags {
	f := &tokenFlags{}

	fs.StringVar(&f.module, "module", "", "PKCS#11 module path (default: $SETPAY_PKCS11_MODULE, else SoftHSM2)")
	fs.StringVar(&f.token, "token", "", "token label")
	fs.StringVar(&f.pinSource, "pin-source", "", "where the user PIN comes from: env:NAME or file:/path (default env:SETPAY_PIN)")
	fs.StringVar(&f.softhsmDir, "softhsm-dir", "", "use the SoftHSM2 dev token directory made by `setpay hsm init-softhsm`")
	return f
}

// resolve fills the defaults and, for a SoftHSM dir, points the process at it (SoftHSM
// reads its config once, at the module's first C_Initialize).
func (f *tokenFlags) resolve() error {
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
		return nil, nil, fmt.Errorf("--token is required")
	}
	mod, err := hsm.OpenModule(f.module, env.logger)
	if err != nil {
		return nil, nil, err
	}
	tok, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: f.token}, PIN: hsm.PINSource(f.pinSource), Logger: env.logger})
	if err != nil {
		_ = mod.Close()
		return nil, nil, err
	}
	return mod, tok, nil
}
