package bench

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/softhsm"
)

// ThrowawaySoftHSM makes a SoftHSM2 token in a temporary directory for one run and
// returns its spec and a cleanup. The token is made through a Module that is closed
// again, so the crypto11 path can be the first to initialise the library afterwards
// (crypto11 fails if the library is already initialised in the process).
func ThrowawaySoftHSM(logger *slog.Logger) (TokenSpec, func(), error) {
	dir, err := os.MkdirTemp("", "setpay-bench-softhsm-*")
	if err != nil {
		return TokenSpec{}, nil, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	spec, err := func() (TokenSpec, error) {
		d, err := softhsm.Create(dir)
		if err != nil {
			return TokenSpec{}, err
		}
		if err := d.Activate(); err != nil {
			return TokenSpec{}, err
		}
		pin, err := d.EnsurePIN()
		if err != nil {
			return TokenSpec{}, err
		}
		path, err := softhsm.FindModule()
		if err != nil {
			return TokenSpec{}, err
		}
		mod, err := hsm.OpenModule(path, logger)
		if err != nil {
			return TokenSpec{}, err
		}
		err = softhsm.InitToken(mod, "setpay-bench", pin)
		if cerr := mod.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return TokenSpec{}, fmt.Errorf("bench: make SoftHSM token: %w", err)
		}
		return TokenSpec{Module: path, Label: "setpay-bench", PIN: hsm.PINSource("file:" + d.PINFile())}, nil
	}()
	if err != nil {
		cleanup()
		return TokenSpec{}, nil, err
	}
	return spec, cleanup, nil
}
