package hsm_test

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

// crypto11 initialises the PKCS#11 library itself and fails when anything in the
// process did so first (CKR_CRYPTOKI_ALREADY_INITIALIZED), as softhsmtest has in this
// binary. So the comparison runs in a child process of this test binary, started with
// crypto11ChildEnv set; TestMain hands it to crypto11Child before the harness starts.
const crypto11ChildEnv = "SETPAY_TEST_CRYPTO11_CHILD"

// crypto11Report is what the child measured; the parent asserts on it.
type crypto11Report struct {
	// Three signatures each after C_CloseAllSessions, then after a re-insert
	// (C_Finalize and C_Initialize: every session, the login and every object handle
	// gone, as when a token is pulled and put back): "ok" or the CKR name.
	C11AfterCloseAll, HSMAfterCloseAll []string
	C11AfterReinsert, HSMAfterReinsert []string
	// A raw C_DecryptInit with CKM_RSA_PKCS (PKCS#1 v1.5, a padding oracle) on each
	// library's RSA decryption key: "ok" or the CKR name. hsm's key carries
	// CKA_ALLOWED_MECHANISMS = {CKM_RSA_PKCS_OAEP}.
	C11OtherMechanism, HSMOtherMechanism string
	// crypto11's default RSA key: may it both sign and decrypt?
	C11RSASignAndDecrypt bool
	// RSA PKCS#1 v1.5 decryption (a padding oracle) through each library's Decrypter.
	C11PKCS1v15Decrypt, HSMPKCS1v15Decrypt string
	// RSA-OAEP with SHA-256, which SoftHSM 2.6.1 refuses, through each Decrypter.
	C11OAEPSHA256, HSMOAEPSHA256 string
}

// outcome names an answer: "ok", hsm's sentinel, or the CKR code.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, hsm.ErrUnsupported):
		return "ErrUnsupported"
	case errors.Is(err, hsm.ErrWrongUsage):
		return "ErrWrongUsage"
	case hsm.CKRName(err) != "":
		return hsm.CKRName(err)
	}
	return "error: " + err.Error()
}

// TestCrypto11VersusHSM records, on SoftHSM, what crypto11 (the library the design
// first named) does where hsm recovers or restricts, so the choice in docs/hsm.md can be
// rerun: `go test -run TestCrypto11VersusHSM -v ./hsm/`. It fails if either changes.
func TestCrypto11VersusHSM(t *testing.T) {
	softhsmtest.Require(t, softhsmtest.SoftHSMDir) // the child needs the token directory
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	_, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "hsm-ec", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	_, err = tok.GenerateKey(ctx, hsm.KeySpec{Label: "hsm-rsa", Algorithm: hsm.RSA2048, Usage: hsm.UsageKeyExchange})
	require.NoError(t, err)

	// In this process the harness initialised the library already: crypto11 gives up.
	_, err = crypto11.Configure(&crypto11.Config{Path: tok.Module().Path(), TokenLabel: tok.Label(), Pin: softhsmtest.PIN})
	assert.ErrorContains(t, err, "CKR_CRYPTOKI_ALREADY_INITIALIZED")

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(softhsmtest.Env(t), crypto11ChildEnv+"="+tok.Module().Path()+"\n"+tok.Label())
	out, err := cmd.Output()
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	require.NoError(t, err, "child: %s", stderr)
	var r crypto11Report
	require.NoError(t, json.Unmarshal(out, &r), "child said: %s", out)
	t.Logf("measured: %+v", r)

	// After C_CloseAllSessions, and after a re-insert, crypto11 signs no more: the
	// login went with the sessions, the private key is hidden, and crypto11 neither logs
	// in again nor finds the key again. hsm reopens, logs in, finds it and retries.
	stuck := []string{"CKR_OBJECT_HANDLE_INVALID", "CKR_OBJECT_HANDLE_INVALID", "CKR_OBJECT_HANDLE_INVALID"}
	assert.Equal(t, stuck, r.C11AfterCloseAll)
	assert.Equal(t, []string{"ok", "ok", "ok"}, r.HSMAfterCloseAll)
	assert.Equal(t, stuck, r.C11AfterReinsert)
	assert.Equal(t, []string{"ok", "ok", "ok"}, r.HSMAfterReinsert)

	// Per-key allowed mechanisms: crypto11 sets none, so the token lets its key do
	// anything of its usage; hsm's key is refused by the token itself.
	assert.Equal(t, "ok", r.C11OtherMechanism)
	assert.Equal(t, "CKR_MECHANISM_INVALID", r.HSMOtherMechanism)
	assert.True(t, r.C11RSASignAndDecrypt, "crypto11's default RSA key has two usages")

	// OAEP and PKCS#1 v1.5: crypto11 passes PKCS#1 v1.5 decryption through, and
	// reports a refused OAEP hash as the bare CKR code; hsm refuses the first and
	// names the second.
	assert.Equal(t, "ok", r.C11PKCS1v15Decrypt)
	assert.Equal(t, "ErrUnsupported", r.HSMPKCS1v15Decrypt)
	assert.Equal(t, "CKR_ARGUMENTS_BAD", r.C11OAEPSHA256)
	assert.Equal(t, "ErrUnsupported", r.HSMOAEPSHA256)

	// ECDH: crypto11 has no key agreement at all, on the context or on a key.
	for _, typ := range []reflect.Type{reflect.TypeFor[*crypto11.Context](), reflect.TypeFor[crypto11.Signer]()} {
		for i := range typ.NumMethod() {
			name := typ.Method(i).Name
			assert.False(t, strings.Contains(name, "ECDH") || strings.Contains(name, "Derive"), "%v has %s now: revisit docs/hsm.md", typ, name)
		}
	}
}

// crypto11Child runs in the child process; it prints a crypto11Report as JSON.
func crypto11Child(spec string) int {
	r, err := crypto11Measure(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crypto11 child:", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "crypto11 child:", err)
		return 1
	}
	return 0
}

func crypto11Measure(spec string) (*crypto11Report, error) {
	path, label, _ := strings.Cut(spec, "\n")
	ctx := context.Background()
	// crypto11 first: it must be the one to initialise the library.
	c11, err := crypto11.Configure(&crypto11.Config{Path: path, TokenLabel: label, Pin: softhsmtest.PIN})
	if err != nil {
		return nil, fmt.Errorf("crypto11: %w", err)
	}
	defer func() { _ = c11.Close() }()
	mod, err := hsm.OpenModule(path, quiet())
	if err != nil {
		return nil, err
	}
	tok, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: label}, PIN: hsm.PINSource("env:" + softhsmtest.PINEnv), Logger: quiet()})
	if err != nil {
		return nil, err
	}
	hk, err := tok.FindKey(ctx, "hsm-ec")
	if err != nil {
		return nil, err
	}
	hrsa, err := tok.FindKey(ctx, "hsm-rsa")
	if err != nil {
		return nil, err
	}
	ck, err := c11.GenerateECDSAKeyPairWithLabel([]byte("c11-ec"), []byte("c11-ec"), elliptic.P256())
	if err != nil {
		return nil, fmt.Errorf("crypto11 EC key: %w", err)
	}
	crsa, err := c11.GenerateRSAKeyPairWithLabel([]byte("c11-rsa"), []byte("c11-rsa"), 2048)
	if err != nil {
		return nil, fmt.Errorf("crypto11 RSA key: %w", err)
	}
	digest := sha256.Sum256([]byte("compare"))
	three := func(s crypto.Signer) []string {
		var out []string
		for range 3 {
			_, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
			out = append(out, outcome(err))
		}
		return out
	}
	if _, err := ck.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
		return nil, fmt.Errorf("crypto11 sign before any event: %w", err)
	}
	r := &crypto11Report{}

	raw := mod.Raw()
	sh, err := raw.OpenSession(tok.Info().Slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return nil, err
	}
	findPriv := func(id []byte) (pkcs11.ObjectHandle, error) {
		if err := raw.FindObjectsInit(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, id)}); err != nil {
			return 0, err
		}
		hs, _, err := raw.FindObjects(sh, 1)
		_ = raw.FindObjectsFinal(sh)
		if err != nil || len(hs) != 1 {
			return 0, fmt.Errorf("find key %x: %d found: %w", id, len(hs), err)
		}
		return hs[0], nil
	}
	otherMech := func(id []byte) string {
		h, err := findPriv(id)
		if err != nil {
			return outcome(err)
		}
		err = raw.DecryptInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}, h)
		if err == nil {
			_, _ = raw.Decrypt(sh, make([]byte, 256)) // end the operation
		}
		return outcome(err)
	}
	r.C11OtherMechanism = otherMech([]byte("c11-rsa"))
	r.HSMOtherMechanism = otherMech(hrsa.ID())
	if h, err := findPriv([]byte("c11-rsa")); err == nil {
		a, err := raw.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil)})
		r.C11RSASignAndDecrypt = err == nil && len(a) == 2 && a[0].Value[0] == 1 && a[1].Value[0] == 1
	}
	_ = raw.CloseSession(sh)

	msg := []byte("0123456789abcdef")
	v15 := func(pub crypto.PublicKey) []byte {
		ct, _ := rsa.EncryptPKCS1v15(rand.Reader, pub.(*rsa.PublicKey), msg)
		return ct
	}
	_, err = crsa.Decrypt(rand.Reader, v15(crsa.Public()), nil)
	r.C11PKCS1v15Decrypt = outcome(err)
	_, err = hrsa.Decrypt(rand.Reader, v15(hrsa.Public()), nil)
	r.HSMPKCS1v15Decrypt = outcome(err)
	oaep256 := func(d crypto.Decrypter) string {
		ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, d.Public().(*rsa.PublicKey), msg, nil)
		_, err := d.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA256})
		return outcome(err)
	}
	r.C11OAEPSHA256 = oaep256(crsa.(crypto.Decrypter))
	r.HSMOAEPSHA256 = oaep256(hrsa)

	if err := raw.CloseAllSessions(tok.Info().Slot); err != nil {
		return nil, err
	}
	r.C11AfterCloseAll, r.HSMAfterCloseAll = three(ck), three(hk)

	if err := raw.Finalize(); err != nil {
		return nil, err
	}
	if err := raw.Initialize(); err != nil {
		return nil, err
	}
	r.C11AfterReinsert, r.HSMAfterReinsert = three(ck), three(hk)
	return r, nil
}
