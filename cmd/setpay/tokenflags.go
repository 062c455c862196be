package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/softhsm"
)

// tokenFlags select a module, a token and a PIN source. With --softhsm-dir the module
// is SoftHSM2 pointed at that directory and the PIN comes from the directory's PIN file,
// so a dev setup needs no other flag; a real HSM sets --module, one of --token,
// --token-serial and --token-slot, and --pin-source. A service configuration's token
// keys (tokenConfig) are opened the same way.
type tokenFlags struct {
	module      string
	token       string
	tokenSerial string
	tokenSlot   slotFlag
	pinSource   string
	softhsmDir  string
	maxSessions int // from a configuration; no flag

	given    tokenConfig // what was asked for, before resolve filled the defaults
	resolved bool
}

// tokenFlagsOn registers the token flags on fs.
func tokenFlagsOn(fs *flagSet) *tokenFlags {
	f := &tokenFlags{}

	fs.StringVar(&f.module, "module", "", "PKCS#11 module path (default: $SETPAY_PKCS11_MODULE, else SoftHSM2)")
	fs.StringVar(&f.token, "token", "", "token label")
	fs.StringVar(&f.tokenSerial, "token-serial", "", "token serial number (as 'setpay hsm list' shows it), instead of --token")
	fs.Var(&f.tokenSlot, "token-slot", "token slot `ID` (as 'setpay hsm list' shows it), instead of --token")
	fs.StringVar(&f.pinSource, "pin-source", "", "where the user PIN comes from: env:NAME or file:/path (default env:SETPAY_PIN)")
	fs.StringVar(&f.softhsmDir, "softhsm-dir", "", "the SoftHSM2 dev token directory made by 'setpay hsm init-softhsm' (sets SOFTHSM2_CONF, the module and the PIN source)")
	return f
}

// slotFlag is an optional slot ID (slot 0 is a slot like any other).
type slotFlag struct{ id *uint }

func (s *slotFlag) String() string {
	if s == nil || s.id == nil {
		return ""
	}
	return strconv.FormatUint(uint64(*s.id), 10)
}

func (s *slotFlag) Set(v string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 0)
	if err != nil {
		return errors.New("want a slot ID: a non-negative integer")
	}
	id := uint(n)
	s.id = &id
	return nil
}

// selected says whether a token was named, by label, serial or slot.
func (f *tokenFlags) selected() bool {
	return f.token != "" || f.tokenSerial != "" || f.tokenSlot.id != nil
}

// selector is the token asked for: exactly one of --token, --token-serial, --token-slot.
func (f *tokenFlags) selector() (hsm.Selector, error) {
	sel := hsm.Selector{Label: f.token, Serial: f.tokenSerial, Slot: f.tokenSlot.id}
	n := 0
	for _, set := range []bool{f.token != "", f.tokenSerial != "", f.tokenSlot.id != nil} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return sel, usageErrorf("--token is required (or --token-serial or --token-slot)")
	case n > 1:
		return sel, usageErrorf("give only one of --token, --token-serial and --token-slot")
	}
	return sel, nil
}

// defaultFrom fills the flags not given from a configuration's token keys (ca.yaml).
func (f *tokenFlags) defaultFrom(t tokenConfig) {
	if !f.selected() {
		f.token, f.tokenSerial = t.Token, t.TokenSerial
		if t.TokenSlot != nil && *t.TokenSlot >= 0 {
			id := uint(*t.TokenSlot)
			f.tokenSlot.id = &id
		}
	}
	if f.module == "" {
		f.module = t.Module
	}
	if f.softhsmDir == "" {
		f.softhsmDir = t.SoftHSMDir
	}
	if f.pinSource == "" {
		f.pinSource = t.PINSource
	}
	if f.maxSessions == 0 {
		f.maxSessions = t.MaxSessions
	}
}

// resolve fills the defaults and, for a SoftHSM dir, points the process at it (SoftHSM
// reads its config once, at the module's first C_Initialize).
func (f *tokenFlags) resolve() error {
	if f.resolved {
		return nil
	}
	f.given = tokenConfig{Module: f.module, SoftHSMDir: f.softhsmDir, Token: f.token, TokenSerial: f.tokenSerial,
		PINSource: f.pinSource, MaxSessions: f.maxSessions}
	if f.tokenSlot.id != nil {
		id := int(*f.tokenSlot.id)
		f.given.TokenSlot = &id
	}
	if f.pinSource != "" {
		if err := checkSecretSource(f.pinSource); err != nil {
			return usageErrorf("--pin-source: %w", err)
		}
	}
	if f.softhsmDir != "" {
		d := softhsm.Dir{Root: mustAbs(f.softhsmDir)}
		if _, err := os.Stat(d.ConfPath()); err != nil {
			return fmt.Errorf("%s is not a SoftHSM2 dev token directory (make one with 'setpay hsm init-softhsm'): %w", d.Root, err)
		}
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
	f.resolved = true
	return nil
}

// recorded is what was asked for as configuration keys of a file in dir: the paths
// relative to dir (a configuration's paths are relative to the file).
func (f *tokenFlags) recorded(dir string) tokenConfig {
	t := f.given
	if t.SoftHSMDir != "" {
		t.SoftHSMDir = relativeTo(dir, t.SoftHSMDir)
	}
	if strings.ContainsRune(t.Module, filepath.Separator) {
		t.Module = relativeTo(dir, t.Module)
	}
	if p, ok := strings.CutPrefix(t.PINSource, "file:"); ok {
		t.PINSource = "file:" + relativeTo(dir, p)
	}
	return t
}

// relativeTo expresses p (relative to the working directory, or absolute) relative to
// dir; it stays absolute when no relative path exists.
func relativeTo(dir, p string) string {
	absDir, absP := mustAbs(dir), mustAbs(p)
	if rel, err := filepath.Rel(absDir, absP); err == nil {
		return rel
	}
	return absP
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
	sel, err := f.selector()
	if err != nil {
		return nil, nil, err
	}
	return openTokenBy(ctx, env, f.module, sel, hsm.PINSource(f.pinSource), f.maxSessions)
}

// openToken opens a module and one of its tokens. Every command and every service
// opens its token here, so an operator reads the same error from `setpay hsm list`
// as from a service whose configuration names the same module, token and PIN.
func openToken(ctx context.Context, env *cliEnv, module, label string, pin hsm.PINSource, maxSessions int) (*hsm.Module, *hsm.Token, error) {
	return openTokenBy(ctx, env, module, hsm.Selector{Label: label}, pin, maxSessions)
}

// openTokenBy is openToken with the token selected by label, serial or slot.
func openTokenBy(ctx context.Context, env *cliEnv, module string, sel hsm.Selector, pin hsm.PINSource, maxSessions int) (*hsm.Module, *hsm.Token, error) {
	mod, err := hsm.OpenModule(module, env.logger)
	if err != nil {
		return nil, nil, softhsmHint(module, err)
	}
	tok, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: sel, PIN: pin, MaxSessions: maxSessions, Logger: env.logger})
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
			"export SOFTHSM2_CONF=<dir>/softhsm2.conf, use --softhsm-dir, or set softhsm_dir in the configuration)", err)
	}
	return err
}
