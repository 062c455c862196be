package hsm_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/testenv"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

func macKey(t *testing.T, tok *hsm.Token, label string) *hsm.SecretKey {
	t.Helper()
	k, err := tok.GenerateSecretKey(context.Background(), hsm.KeySpec{Label: label, Algorithm: hsm.HMACSHA256, Usage: hsm.UsageMAC})
	if errors.Is(err, hsm.ErrUnsupported) {
		// The refusal names what is missing and where.
		assert.ErrorContains(t, err, "CKM_")
		assert.ErrorContains(t, err, tok.Label())
		softhsmtest.Require(t, softhsmtest.HMAC)
	}
	require.NoError(t, err)
	return k
}

// rawSession opens a logged-in session of its own on the token, to try what the hsm
// package never offers.
func rawSession(t *testing.T, tok *hsm.Token) (*pkcs11.Ctx, pkcs11.SessionHandle) {
	t.Helper()
	p := tok.Module().Raw()
	sh, err := p.OpenSession(tok.Info().Slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.CloseSession(sh) })
	return p, sh
}

func handleOf(t *testing.T, p *pkcs11.Ctx, sh pkcs11.SessionHandle, class uint, id []byte) pkcs11.ObjectHandle {
	t.Helper()
	require.NoError(t, p.FindObjectsInit(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class), pkcs11.NewAttribute(pkcs11.CKA_ID, id)}))
	hs, _, err := p.FindObjects(sh, 2)
	require.NoError(t, p.FindObjectsFinal(sh))
	require.NoError(t, err)
	require.Len(t, hs, 1)
	return hs[0]
}

// macOnly turns off the usages a module grants an imported secret key by default.
var macOnly = []*pkcs11.Attribute{
	pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false), pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
	pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false), pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
	pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false), pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
}

func TestSecretKeyStaysInTheTokenAndOnlyMACs(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	k := macKey(t, tok, "pan-hash")
	assert.Equal(t, "pan-hash", k.Label())
	assert.Contains(t, k.URI(), "type=secret-key")

	objs, err := tok.Objects(ctx)
	require.NoError(t, err)
	require.Len(t, objs, 1)
	o := objs[0]
	assert.Equal(t, "secret-key", o.Class)
	assert.Equal(t, "GENERIC_SECRET", o.KeyType)
	for _, f := range []string{"CKA_TOKEN", "CKA_PRIVATE", "CKA_SENSITIVE", "CKA_ALWAYS_SENSITIVE", "CKA_NEVER_EXTRACTABLE", "CKA_LOCAL", "CKA_SIGN"} {
		assert.True(t, o.Flags[f], f)
	}
	for _, f := range []string{"CKA_EXTRACTABLE", "CKA_VERIFY", "CKA_ENCRYPT", "CKA_DECRYPT", "CKA_WRAP", "CKA_UNWRAP", "CKA_DERIVE"} {
		assert.False(t, o.Flags[f], f)
	}

	p, sh := rawSession(t, tok)
	h := handleOf(t, p, sh, pkcs11.CKO_SECRET_KEY, k.ID())
	t.Run("value cannot be read", func(t *testing.T) {
		_, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		code, _ := hsm.CKR(err)
		assert.Equal(t, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE), code, "%v", err)
	})
	t.Run("cannot be made extractable", func(t *testing.T) {
		err := p.SetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true)})
		require.Error(t, err)
		a, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil)})
		require.NoError(t, err)
		assert.Equal(t, []byte{0}, a[0].Value)
	})
	t.Run("cannot be wrapped out", func(t *testing.T) {
		wrapKey, err := p.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false), pkcs11.NewAttribute(pkcs11.CKA_WRAP, true)})
		require.NoError(t, err)
		_, err = p.WrapKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP, nil)}, wrapKey, h)
		require.Error(t, err, "the token wrapped the PAN hash key out")
	})
	// Each refusal comes from the token, not from this package: the key is used here
	// through the raw module, as any other program holding the PIN could.
	refusals := []struct {
		name string
		init func() error
	}{
		{"verify", func() error {
			return p.VerifyInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}, h)
		}},
		{"encrypt", func() error {
			return p.EncryptInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil)}, h)
		}},
		{"derive", func() error {
			_, err := p.DeriveKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_KEY_DERIVATION, nil)}, h, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false)})
			return err
		}},
		{"sign with another HMAC (outside CKA_ALLOWED_MECHANISMS)", func() error {
			// The capability table says which modules must restrict; one that should
			// and silently does not fails here instead of skipping.
			softhsmtest.Require(t, softhsmtest.AllowedMechanisms)
			require.True(t, tok.RestrictsMechanisms(), "%s is listed as enforcing CKA_ALLOWED_MECHANISMS", softhsmtest.Kind())
			return p.SignInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA512_HMAC, nil)}, h)
		}},
	}
	for _, c := range refusals {
		t.Run("token refuses "+c.name, func(t *testing.T) {
			err := c.init()
			require.Error(t, err, "the token let the MAC key do more than MAC")
			code, _ := hsm.CKR(err)
			assert.Contains(t, []pkcs11.Error{pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_KEY_TYPE_INCONSISTENT}, code, "%v", err)
		})
	}
}

func TestSecretKeyMACIsDeterministicAndKeyed(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	k1 := macKey(t, tok, "mac-1")
	k2 := macKey(t, tok, "mac-2")
	m1, err := k1.MAC(ctx, []byte("4111111111111111"))
	require.NoError(t, err)
	assert.Len(t, m1, 32)
	again, err := k1.MAC(ctx, []byte("4111111111111111"))
	require.NoError(t, err)
	assert.Equal(t, m1, again, "same key, same data: same MAC")
	other, err := k1.MAC(ctx, []byte("4111111111111112"))
	require.NoError(t, err)
	assert.NotEqual(t, m1, other)
	m2, err := k2.MAC(ctx, []byte("4111111111111111"))
	require.NoError(t, err)
	assert.NotEqual(t, m1, m2, "two keys must not give the same MAC")
	// The software HMAC with no key, or with a key of zeros, is not what the token does.
	for _, guess := range [][]byte{nil, make([]byte, 32)} {
		mac := hmac.New(sha256.New, guess)
		mac.Write([]byte("4111111111111111"))
		assert.NotEqual(t, mac.Sum(nil), m1)
	}

	// Found again by label and by URI, and after the token is closed and opened again.
	byLabel, err := tok.FindSecretKey(ctx, "mac-1")
	require.NoError(t, err)
	u, err := hsm.ParseURI(k1.URI())
	require.NoError(t, err)
	byURI, err := tok.SecretKeyByURI(ctx, u)
	require.NoError(t, err)
	reopened, err := tok.Module().OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: tok.Label()}, PIN: hsm.PINSource("env:" + softhsmtest.PINEnv)})
	require.NoError(t, err)
	defer reopened.Close()
	afterReopen, err := reopened.FindSecretKey(ctx, "mac-1")
	require.NoError(t, err)
	for name, k := range map[string]*hsm.SecretKey{"label": byLabel, "uri": byURI, "reopened": afterReopen} {
		m, err := k.MAC(ctx, []byte("4111111111111111"))
		require.NoError(t, err, name)
		assert.Equal(t, m1, m, name)
	}
	assert.GreaterOrEqual(t, tok.Stats().Operations.Load(), uint64(6))
}

// TestTokenMACIsHMACSHA256 imports a key of known value (sensitive, never extractable,
// so the package accepts it) and checks the token's MAC against crypto/hmac: what the
// generated keys compute is HMAC-SHA256, not some other function of the key.
func TestTokenMACIsHMACSHA256(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	macKey(t, tok, "probe") // skips where the module has no HMAC
	p, sh := rawSession(t, tok)
	value := []byte("0123456789abcdef0123456789abcdef")
	_, err := p.CreateObject(sh, append([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "known"), pkcs11.NewAttribute(pkcs11.CKA_ID, []byte("known")),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true), pkcs11.NewAttribute(pkcs11.CKA_VALUE, value)}, macOnly...))
	require.NoError(t, err)
	k, err := tok.FindSecretKey(ctx, "known")
	require.NoError(t, err)
	for _, msg := range []string{"", "4111111111111111", strings.Repeat("x", 1000)} {
		got, err := k.MAC(ctx, []byte(msg))
		require.NoError(t, err)
		want := hmac.New(sha256.New, value)
		want.Write([]byte(msg))
		assert.Equal(t, want.Sum(nil), got, "len %d", len(msg))
	}
}

func TestSecretKeyRefusals(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	macKey(t, tok, "pan-hash")
	_, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "sig", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)

	bad := []struct {
		name string
		spec hsm.KeySpec
		want error
	}{
		{"no label", hsm.KeySpec{Algorithm: hsm.HMACSHA256}, hsm.ErrBadRequest},
		{"asymmetric algorithm", hsm.KeySpec{Label: "x", Algorithm: hsm.ECDSAP256}, hsm.ErrBadRequest},
		{"sign usage", hsm.KeySpec{Label: "x", Algorithm: hsm.HMACSHA256, Usage: hsm.UsageSign}, hsm.ErrBadRequest},
		{"label taken", hsm.KeySpec{Label: "pan-hash", Algorithm: hsm.HMACSHA256}, hsm.ErrKeyExists},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := tok.GenerateSecretKey(ctx, c.spec)
			assert.ErrorIs(t, err, c.want)
		})
	}
	t.Run("a private key is not a secret key", func(t *testing.T) {
		_, err := tok.FindSecretKey(ctx, "sig")
		assert.ErrorIs(t, err, hsm.ErrKeyNotFound)
		_, err = tok.FindKey(ctx, "pan-hash")
		assert.ErrorIs(t, err, hsm.ErrKeyNotFound)
		u, err := hsm.ParseURI("pkcs11:object=sig;type=private")
		require.NoError(t, err)
		_, err = tok.SecretKeyByURI(ctx, u)
		assert.ErrorIs(t, err, hsm.ErrBadRequest)
	})
	t.Run("an extractable or readable key is refused", func(t *testing.T) {
		p, sh := rawSession(t, tok)
		for _, c := range []struct {
			label                  string
			sensitive, extractable bool
		}{{"readable", false, false}, {"extractable", true, true}} {
			_, err := p.CreateObject(sh, append([]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), pkcs11.NewAttribute(pkcs11.CKA_LABEL, c.label),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, c.sensitive), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, c.extractable),
				pkcs11.NewAttribute(pkcs11.CKA_SIGN, true), pkcs11.NewAttribute(pkcs11.CKA_VALUE, make([]byte, 32))}, macOnly...))
			require.NoError(t, err)
			_, err = tok.FindSecretKey(ctx, c.label)
			assert.ErrorIs(t, err, hsm.ErrWrongUsage, c.label)
		}
	})
	t.Run("deleted key is gone", func(t *testing.T) {
		k := macKey(t, tok, "retired")
		require.NoError(t, tok.DeleteSecretKey(ctx, k))
		_, err := tok.FindSecretKey(ctx, "retired")
		assert.ErrorIs(t, err, hsm.ErrKeyNotFound)
	})
}

// TestPkcs11ToolSeesSensitiveSecretKey reads the MAC key with OpenSC.
func TestPkcs11ToolSeesSensitiveSecretKey(t *testing.T) {
	tool := testenv.Tool(t, "pkcs11-tool")
	tok := softhsmtest.NewToken(t)
	macKey(t, tok, "pan-hash")
	cmd := exec.Command(tool, "--module", tok.Module().Path(), "--token-label", tok.Label(), "--login",
		"--pin", softhsmtest.PIN, "--list-objects", "--type", "secrkey")
	cmd.Env = softhsmtest.Env(t)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	text := string(out)
	blocks := strings.Split(text, "Secret Key Object")
	require.Len(t, blocks, 2, text)
	b := blocks[1]
	assert.Regexp(t, `label:\s+pan-hash`, b)
	// OpenSC 0.23 lists only encrypt, decrypt, wrap, unwrap and derive for secret keys
	// (it prints "none" for a sign-only one): none of those may show.
	usage := regexp.MustCompile(`Usage:\s+([^\n]*)`).FindStringSubmatch(b)
	require.Len(t, usage, 2, b)
	for _, u := range []string{"encrypt", "decrypt", "wrap", "unwrap", "derive", "verify"} {
		assert.NotContains(t, usage[1], u)
	}
	assert.Contains(t, b, "sensitive")
	assert.Contains(t, b, "always sensitive")
	assert.Contains(t, b, "never extractable")
	assert.NotContains(t, b, "Value:", "pkcs11-tool must not be able to print the key")
}

func TestSecretKeySurvivesSessionLoss(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	k := macKey(t, tok, "pan-hash")
	want, err := k.MAC(ctx, []byte("recover"))
	require.NoError(t, err)
	other := pkcs11.New(tok.Module().Path())
	require.NotNil(t, other)
	_ = other.Initialize() // CKR_CRYPTOKI_ALREADY_INITIALIZED: same process, same library
	t.Cleanup(other.Destroy)
	require.NoError(t, other.CloseAllSessions(tok.Info().Slot))
	got, err := k.MAC(ctx, []byte("recover"))
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.GreaterOrEqual(t, tok.Stats().Recoveries.Load(), uint64(1))
}

// BenchmarkSecretKeyMAC is the token's cost of one PAN hash.
func BenchmarkSecretKeyMAC(b *testing.B) {
	tok := softhsmtest.NewToken(b)
	k, err := tok.GenerateSecretKey(context.Background(), hsm.KeySpec{Label: "bench", Algorithm: hsm.HMACSHA256})
	if errors.Is(err, hsm.ErrUnsupported) {
		softhsmtest.Require(b, softhsmtest.HMAC)
	}
	require.NoError(b, err)
	data := []byte("setpay pan-hash v2\x004111111111111111")
	b.ResetTimer()
	for b.Loop() {
		if _, err := k.MAC(context.Background(), data); err != nil {
			b.Fatal(err)
		}
	}
}
