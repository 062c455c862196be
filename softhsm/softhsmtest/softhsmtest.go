// Package softhsmtest gives every test binary a real SoftHSM2 token directory of its own.
//
// SoftHSM reads SOFTHSM2_CONF once per process, so the directory is made once per test
// binary (in TestMain via Main) and each test gets a fresh token with a unique label.
// The package-level harness is the one concession to that process-wide constraint.
package softhsmtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/softhsm"
)

// PINEnv is the environment variable holding the test tokens' user PIN.
const PINEnv = "SETPAY_TEST_TOKEN_PIN"

// PIN is the user PIN of every test token.
const PIN = "test-pin-1234"

type harness struct {
	dir    softhsm.Dir
	module *hsm.Module
	err    error
}

var (
	once  sync.Once
	h     harness
	count atomic.Uint64
)

func setup() {
	root, err := os.MkdirTemp("", "setpay-softhsm-*")
	if err != nil {
		h.err = err
		return
	}
	d, err := softhsm.Create(root)
	if err != nil {
		h.err = err
		return
	}
	if err := d.Activate(); err != nil {
		h.err = err
		return
	}
	path, err := softhsm.FindModule()
	if err != nil {
		h.err = err
		return
	}
	if err := os.Setenv(PINEnv, PIN); err != nil {
		h.err = err
		return
	}
	h.dir = d
	h.module, h.err = hsm.OpenModule(path, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

// Main runs the package's tests against a temporary SoftHSM token directory and removes
// it afterwards. Call it from TestMain.
func Main(m *testing.M) {
	once.Do(setup)
	if h.err != nil {
		fmt.Fprintf(os.Stderr, "softhsmtest: cannot set up SoftHSM2: %v\n", h.err)
		os.Exit(2)
	}
	code := m.Run()
	_ = h.module.Close()
	_ = os.RemoveAll(h.dir.Root)
	os.Exit(code)
}

func mustHarness(t testing.TB) {
	t.Helper()
	once.Do(setup)
	require.NoError(t, h.err, "SoftHSM2 test harness")
	require.NotEmpty(t, h.dir.Root, "call softhsmtest.Main from TestMain")
}

// Module is the process's SoftHSM module.
func Module(t testing.TB) *hsm.Module {
	mustHarness(t)
	return h.module
}

// Dir is the token directory of this test binary.
func Dir(t testing.TB) softhsm.Dir {
	mustHarness(t)
	return h.dir
}

// Env returns the environment an external tool (pkcs11-tool, openssl) needs to see the
// same tokens: SOFTHSM2_CONF pointing at this binary's directory.
func Env(t testing.TB) []string {
	mustHarness(t)
	return append(os.Environ(), "SOFTHSM2_CONF="+h.dir.ConfPath())
}

// NewLabel returns a token label unique within the test binary.
func NewLabel(t testing.TB) string {
	n := count.Add(1)
	return fmt.Sprintf("t%d-%d", os.Getpid()%100000, n)
}

// NewToken initialises a fresh token, logs in and closes it when the test ends.
func NewToken(t testing.TB) *hsm.Token {
	return NewTokenWith(t, hsm.TokenConfig{})
}

// NewTokenWith is NewToken with token settings (MaxSessions, Logger); the selector and
// PIN are filled in.
func NewTokenWith(t testing.TB, cfg hsm.TokenConfig) *hsm.Token {
	t.Helper()
	mod := Module(t)
	label := NewLabel(t)
	require.NoError(t, softhsm.InitToken(mod, label, PIN))
	cfg.Selector = hsm.Selector{Label: label}
	cfg.PIN = hsm.PINSource("env:" + PINEnv)
	tok, err := mod.OpenToken(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tok.Close() })
	return tok
}
