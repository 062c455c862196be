// Package softhsmtest gives every test binary real PKCS#11 tokens of its own: SoftHSM2
// by default, or tpm2-pkcs11 over a software TPM when SETPAY_TEST_PKCS11=tpm2 (run the
// tests under scripts/tpm2-test.sh, which starts the TPM and exports the environment).
//
// Both modules read their configuration (SOFTHSM2_CONF, TPM2_PKCS11_STORE) once per
// process, at C_Initialize, so the token store is made once per test binary (in TestMain
// via Main) and each test gets a fresh token with a unique label. The package-level
// harness is the one concession to that process-wide constraint.
//
// Tests that need something only some modules do call Require, which skips with the
// reason on the others, so a second module never turns a capability gap into a failure.
package softhsmtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
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

// KindEnv selects the PKCS#11 implementation the tests run against; unset means SoftHSM.
const KindEnv = "SETPAY_TEST_PKCS11"

// ModuleEnv overrides the module path of the selected implementation.
const ModuleEnv = "SETPAY_TEST_MODULE"

// ModuleKind names a PKCS#11 implementation the tests know how to set up.
type ModuleKind string

// The implementations the harness sets up.
const (
	SoftHSM ModuleKind = "softhsm" // SoftHSM2, the default
	TPM2    ModuleKind = "tpm2"    // tpm2-pkcs11 over swtpm and tpm2-abrmd (scripts/tpm2-test.sh)
)

// Feature is something a test needs that not every module offers.
type Feature string

// Features whose absence makes a test skip instead of fail.
const (
	// ECDH is EC key agreement (CKM_ECDH1_DERIVE); tpm2-pkcs11 does not offer it.
	ECDH Feature = "ECDH key agreement (CKM_ECDH1_DERIVE)"
	// RSASign is RSA signing of a precomputed digest (CKM_RSA_PKCS, CKM_RSA_PKCS_PSS)
	// with a key that may only sign, which is what crypto.Signer needs.
	RSASign Feature = "RSA signing of a digest with a sign-only key"
	// RSA4096 is 4096-bit RSA; TPMs stop at 3072 (swtpm) or 2048.
	RSA4096 Feature = "RSA 4096-bit keys"
	// OAEPSHA256 is RSA-OAEP with SHA-256; SoftHSM 2.6.1 refuses it with CKR_ARGUMENTS_BAD.
	OAEPSHA256 Feature = "RSA-OAEP with SHA-256"
	// SoftHSMDir is the SoftHSM token directory and its softhsm2.conf.
	SoftHSMDir Feature = "a SoftHSM2 token directory"
	// HMAC is a generated secret key used with CKM_SHA256_HMAC (the PAN hash key).
	HMAC Feature = "HMAC-SHA256 secret keys (CKM_GENERIC_SECRET_KEY_GEN, CKM_SHA256_HMAC)"
	// AllowedMechanisms is a token that takes CKA_ALLOWED_MECHANISMS on a generated
	// private key and enforces it. Both modules do; a module that lacks it is listed
	// here, so a token that silently loses the restriction fails the tests instead of
	// skipping them.
	AllowedMechanisms Feature = "CKA_ALLOWED_MECHANISMS on generated keys, enforced by the token"
	// ReadAllowedMechanisms is reading CKA_ALLOWED_MECHANISMS back. p11-kit's RPC client
	// (a network-HSM stand-in) answers CKR_DEVICE_ERROR for it while the token behind
	// still enforces the list; a module with that quirk is listed here, by capability.
	ReadAllowedMechanisms Feature = "reading CKA_ALLOWED_MECHANISMS back"
)

// missing lists, per module, what it lacks and why; measured on Debian 12 (SoftHSM
// 2.6.1; tpm2-pkcs11 1.9.0 on swtpm 0.7.1). See docs/hsm.md for the full table.
var missing = map[ModuleKind]map[Feature]string{
	SoftHSM: {
		RSA4096:    "setpay generates RSA 2048 and 3072 only",
		OAEPSHA256: "SoftHSM 2.6.1 refuses OAEP with any hash but SHA-1 (CKR_ARGUMENTS_BAD)",
	},
	TPM2: {
		ECDH: "tpm2-pkcs11 offers no CKM_ECDH1_DERIVE",
		RSASign: "tpm2-pkcs11 1.9 does CKM_RSA_PKCS_PSS only as hash-and-sign and CKM_RSA_PKCS " +
			"signing as a raw decryption, which a sign-only key is refused",
		RSA4096:    "the TPM stops at RSA 3072",
		SoftHSMDir: "tokens live in a tpm2-pkcs11 store, not a SoftHSM directory",
		HMAC:       "tpm2-pkcs11 1.9 offers no CKM_GENERIC_SECRET_KEY_GEN, so no secret key can be generated through PKCS#11",
	},
}

type harness struct {
	kind   ModuleKind
	store  string // SoftHSM token directory root, or the tpm2-pkcs11 store of this binary
	dir    softhsm.Dir
	module *hsm.Module
	err    error
}

var (
	once  sync.Once
	h     harness
	count atomic.Uint64
)

// Kind is the PKCS#11 implementation selected by SETPAY_TEST_PKCS11 (SoftHSM when unset).
func Kind() ModuleKind {
	if k := ModuleKind(os.Getenv(KindEnv)); k != "" {
		return k
	}
	return SoftHSM
}

// Supports reports whether the selected module offers f.
func Supports(f Feature) bool {
	_, lacks := missing[Kind()][f]
	return !lacks
}

// Require skips the test, naming the module and the reason, when the selected module
// does not offer f.
func Require(t testing.TB, f Feature) {
	t.Helper()
	if why, lacks := missing[Kind()][f]; lacks {
		t.Skipf("%s: needs %s: %s", Kind(), f, why)
	}
}

func setup() {
	if err := os.Setenv(PINEnv, PIN); err != nil {
		h.err = err
		return
	}
	h.kind = Kind()
	var path string
	switch h.kind {
	case SoftHSM:
		path, h.err = setupSoftHSM()
	case TPM2:
		path, h.err = setupTPM2()
	default:
		h.err = fmt.Errorf("%s=%q: unknown (use %s or %s)", KindEnv, h.kind, SoftHSM, TPM2)
	}
	if h.err != nil {
		return
	}
	h.module, h.err = hsm.OpenModule(path, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

func setupSoftHSM() (string, error) {
	root, err := os.MkdirTemp("", "setpay-softhsm-*")
	if err != nil {
		return "", err
	}
	h.store = root
	d, err := softhsm.Create(root)
	if err != nil {
		return "", err
	}
	if err := d.Activate(); err != nil {
		return "", err
	}
	h.dir = d
	if p := os.Getenv(ModuleEnv); p != "" {
		return p, nil
	}
	return softhsm.FindModule()
}

// setupTPM2 gives this binary a tpm2-pkcs11 store of its own, seeded from the store
// scripts/tpm2-test.sh initialised (which records the TPM's primary key), so test
// binaries running side by side never share a token database.
func setupTPM2() (string, error) {
	if os.Getenv("TPM2_PKCS11_TCTI") == "" {
		return "", fmt.Errorf("TPM2_PKCS11_TCTI is not set: run the tests under scripts/tpm2-test.sh run go test ...")
	}
	path := os.Getenv(ModuleEnv)
	if path == "" {
		path = "/usr/lib/" + multiarch() + "/pkcs11/libtpm2_pkcs11.so"
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("tpm2-pkcs11 module (set %s, or apt-get install libtpm2-pkcs11-1): %w", ModuleEnv, err)
	}
	store, err := os.MkdirTemp("", "setpay-tpm2-*")
	if err != nil {
		return "", err
	}
	h.store = store
	const db = "tpm2_pkcs11.sqlite3"
	if tmpl := os.Getenv("TPM2_PKCS11_STORE"); tmpl != "" {
		if err := copyFile(filepath.Join(tmpl, db), filepath.Join(store, db)); err != nil {
			return "", fmt.Errorf("seed the tpm2-pkcs11 store from %s: %w", tmpl, err)
		}
	}
	if err := os.Setenv("TPM2_PKCS11_STORE", store); err != nil {
		return "", err
	}
	return path, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

func multiarch() string {
	if runtime.GOARCH == "arm64" {
		return "aarch64-linux-gnu"
	}
	return "x86_64-linux-gnu"
}

// Main runs the package's tests against a temporary token store and removes it
// afterwards. Call it from TestMain.
func Main(m *testing.M) {
	once.Do(setup)
	if h.err != nil {
		fmt.Fprintf(os.Stderr, "softhsmtest: cannot set up %s PKCS#11 tokens: %v\n", Kind(), h.err)
		if h.store != "" {
			_ = os.RemoveAll(h.store)
		}
		os.Exit(2)
	}
	code := m.Run()
	_ = h.module.Close()
	_ = os.RemoveAll(h.store)
	os.Exit(code)
}

func mustHarness(t testing.TB) {
	t.Helper()
	once.Do(setup)
	require.NoError(t, h.err, "%s PKCS#11 test harness", Kind())
	require.NotEmpty(t, h.store, "call softhsmtest.Main from TestMain")
}

// Module is the process's PKCS#11 module.
func Module(t testing.TB) *hsm.Module {
	mustHarness(t)
	return h.module
}

// Dir is the SoftHSM token directory of this test binary; the test is skipped on other
// modules.
func Dir(t testing.TB) softhsm.Dir {
	t.Helper()
	Require(t, SoftHSMDir)
	mustHarness(t)
	return h.dir
}

// Env returns the environment an external tool (pkcs11-tool, openssl) needs to see the
// same tokens: SOFTHSM2_CONF or TPM2_PKCS11_STORE pointing at this binary's store, and
// the TPM connection settings the harness inherited.
func Env(t testing.TB) []string {
	mustHarness(t)
	if h.kind == SoftHSM {
		return append(os.Environ(), "SOFTHSM2_CONF="+h.dir.ConfPath())
	}
	return append(os.Environ(), "TPM2_PKCS11_STORE="+h.store)
}

// NewLabel returns a token label unique within the test binary.
func NewLabel(t testing.TB) string {
	n := count.Add(1)
	return fmt.Sprintf("t%d-%d", os.Getpid()%100000, n)
}

// InitToken creates a token labelled label with user PIN PIN, without opening it.
// Both modules initialise tokens through PKCS#11 itself (C_InitToken into their empty
// slot, then C_InitPIN); the SO PIN is random and discarded.
func InitToken(t testing.TB, label string) {
	t.Helper()
	mod := Module(t)
	_, err := mod.InitToken(label, rand.Text(), PIN)
	if err != nil && h.kind == TPM2 {
		// Each logged-in tpm2-pkcs11 token holds a TPM auth session until C_Finalize, and
		// swtpm has 64 of them, shared by every process on the TPM.
		require.NoError(t, err, "initialise tpm2 token %q (this binary has made %d tokens; the TPM runs out of sessions after about 64 logged-in tokens in all)", label, count.Load())
	}
	require.NoError(t, err, "initialise %s token %q", h.kind, label)
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
	InitToken(t, label)
	cfg.Selector = hsm.Selector{Label: label}
	cfg.PIN = hsm.PINSource("env:" + PINEnv)
	tok, err := mod.OpenToken(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tok.Close() })
	return tok
}
