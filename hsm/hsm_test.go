package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"encoding/binary"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/testenv"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(crypto11ChildEnv); spec != "" {
		os.Exit(crypto11Child(spec)) // see TestCrypto11VersusHSM
	}
	softhsmtest.Main(m)
}

func TestGeneratedKeysStayInTheTokenWithOneUsage(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	cases := []struct {
		alg   hsm.Algorithm
		usage hsm.Usage
		want  map[string]bool // usage flags on the private key
	}{
		{hsm.ECDSAP256, hsm.UsageSign, map[string]bool{"CKA_SIGN": true, "CKA_DECRYPT": false, "CKA_UNWRAP": false, "CKA_DERIVE": false}},
		{hsm.ECDSAP384, hsm.UsageSign, map[string]bool{"CKA_SIGN": true, "CKA_DECRYPT": false, "CKA_UNWRAP": false, "CKA_DERIVE": false}},
		{hsm.ECDSAP256, hsm.UsageKeyExchange, map[string]bool{"CKA_SIGN": false, "CKA_DECRYPT": false, "CKA_UNWRAP": false, "CKA_DERIVE": true}},
		{hsm.RSA2048, hsm.UsageSign, map[string]bool{"CKA_SIGN": true, "CKA_DECRYPT": false, "CKA_UNWRAP": false, "CKA_DERIVE": false}},
		{hsm.RSA2048, hsm.UsageKeyExchange, map[string]bool{"CKA_SIGN": false, "CKA_DECRYPT": true, "CKA_UNWRAP": true, "CKA_DERIVE": false}},
		{hsm.RSA3072, hsm.UsageSign, map[string]bool{"CKA_SIGN": true, "CKA_DECRYPT": false, "CKA_UNWRAP": false, "CKA_DERIVE": false}},
	}
	made := 0
	for _, c := range cases {
		label := string(c.alg) + "-" + string(c.usage)
		k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: label, Algorithm: c.alg, Usage: c.usage})
		if c.usage == hsm.UsageKeyExchange && c.alg != hsm.RSA2048 && !softhsmtest.Supports(softhsmtest.ECDH) {
			// The refusal must be clear and name what is missing and where.
			assert.ErrorIs(t, err, hsm.ErrUnsupported, label)
			assert.ErrorContains(t, err, "CKM_ECDH1_DERIVE")
			assert.ErrorContains(t, err, tok.Label())
			continue
		}
		require.NoError(t, err, label)
		made++
		assert.Equal(t, c.alg, k.Algorithm())
		assert.Equal(t, c.usage, k.Usage())
	}
	objs, err := tok.Objects(ctx)
	require.NoError(t, err)
	privs := 0
	for _, o := range objs {
		if o.Class != "private" {
			continue
		}
		privs++
		var c *struct {
			alg   hsm.Algorithm
			usage hsm.Usage
			want  map[string]bool
		}
		for i := range cases {
			if string(cases[i].alg)+"-"+string(cases[i].usage) == o.Label {
				c = (*struct {
					alg   hsm.Algorithm
					usage hsm.Usage
					want  map[string]bool
				})(&cases[i])
			}
		}
		require.NotNil(t, c, o.Label)
		t.Run(o.Label, func(t *testing.T) {
			for _, f := range []string{"CKA_TOKEN", "CKA_PRIVATE", "CKA_SENSITIVE", "CKA_ALWAYS_SENSITIVE", "CKA_NEVER_EXTRACTABLE", "CKA_LOCAL"} {
				assert.True(t, o.Flags[f], f)
			}
			assert.False(t, o.Flags["CKA_EXTRACTABLE"], "CKA_EXTRACTABLE")
			assert.False(t, o.Flags["CKA_SIGN_RECOVER"], "CKA_SIGN_RECOVER")
			for f, want := range c.want {
				assert.Equal(t, want, o.Flags[f], f)
			}
			assert.True(t, strings.HasPrefix(o.URI, "pkcs11:token="), o.URI)
		})
	}
	assert.Equal(t, made, privs)
}

// TestPkcs11ToolSeesSensitiveKeys reads the token with OpenSC, which nobody here wrote.
func TestPkcs11ToolSeesSensitiveKeys(t *testing.T) {
	tool := testenv.Tool(t, "pkcs11-tool")
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	_, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "gw-sign", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	_, err = tok.GenerateKey(ctx, hsm.KeySpec{Label: "gw-kex", Algorithm: hsm.RSA2048, Usage: hsm.UsageKeyExchange})
	require.NoError(t, err)

	cmd := exec.Command(tool, "--module", tok.Module().Path(), "--token-label", tok.Label(), "--login",
		"--pin", "env:"+softhsmtest.PINEnv, "--list-objects", "--type", "privkey")
	// pkcs11-tool takes --pin literally; give it the PIN through its stdin-free env form
	// only in tests, where the PIN is a fixed test value.
	cmd.Args[7] = softhsmtest.PIN
	cmd.Env = softhsmtest.Env(t)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	text := string(out)
	blocks := strings.Split(text, "Private Key Object")
	require.Len(t, blocks, 3, text)
	for _, b := range blocks[1:] {
		assert.Contains(t, b, "sensitive")
		assert.Contains(t, b, "never extractable")
		assert.Contains(t, b, "always sensitive")
		assert.NotContains(t, b, "sign, decrypt")
	}
	assert.Regexp(t, `(?s)label:\s+gw-sign.*?Usage:\s+sign\b`, text)
	assert.Regexp(t, `(?s)label:\s+gw-kex.*?Usage:\s+decrypt, unwrap`, text)
}

func TestSignaturesVerifyWithTheStandardLibrary(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	msg := []byte("SET dual signature input")
	d256 := sha256.Sum256(msg)
	d384 := sha512.Sum384(msg)
	cases := []struct {
		name string
		alg  hsm.Algorithm
		opts crypto.SignerOpts
		dig  []byte
	}{
		{"ecdsa-p256", hsm.ECDSAP256, crypto.SHA256, d256[:]},
		{"ecdsa-p384", hsm.ECDSAP384, crypto.SHA384, d384[:]},
		{"rsa2048-pkcs1", hsm.RSA2048, crypto.SHA256, d256[:]},
		{"rsa2048-pss", hsm.RSA2048, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}, d256[:]},
		{"rsa3072-pss-sha384", hsm.RSA3072, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA384}, d384[:]},
		{"rsa3072-pkcs1-sha384", hsm.RSA3072, crypto.SHA384, d384[:]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: c.name, Algorithm: c.alg, Usage: hsm.UsageSign})
			require.NoError(t, err)
			sig, err := k.Sign(rand.Reader, c.dig, c.opts)
			if _, isRSA := k.Public().(*rsa.PublicKey); isRSA && !softhsmtest.Supports(softhsmtest.RSASign) {
				assert.ErrorIs(t, err, hsm.ErrUnsupported)
				assert.ErrorContains(t, err, "CKM_RSA_PKCS")
				assert.ErrorContains(t, err, tok.Label())
				softhsmtest.Require(t, softhsmtest.RSASign)
			}
			require.NoError(t, err)
			switch pub := k.Public().(type) {
			case *ecdsa.PublicKey:
				assert.True(t, ecdsa.VerifyASN1(pub, c.dig, sig))
			case *rsa.PublicKey:
				if pss, ok := c.opts.(*rsa.PSSOptions); ok {
					assert.NoError(t, rsa.VerifyPSS(pub, pss.Hash, c.dig, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}))
				} else {
					assert.NoError(t, rsa.VerifyPKCS1v15(pub, c.opts.HashFunc(), c.dig, sig))
				}
			default:
				t.Fatalf("public key %T", pub)
			}
			// The same key found again by label signs identically verifiable signatures.
			again, err := tok.FindKey(ctx, c.name)
			require.NoError(t, err)
			assert.Equal(t, k.Public(), again.Public())
		})
	}
}

func TestOAEPRoundTripAndProbe(t *testing.T) {
	ctx := context.Background()
	// One session, so the session a failed decryption used is the one the next uses.
	tok := softhsmtest.NewTokenWith(t, hsm.TokenConfig{MaxSessions: 1})
	k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "kex", Algorithm: hsm.RSA2048, Usage: hsm.UsageKeyExchange})
	require.NoError(t, err)
	pub := k.Public().(*rsa.PublicKey)
	secret := []byte("0123456789abcdef0123456789abcdef")

	ct, err := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, pub, secret, nil)
	require.NoError(t, err)
	pt, err := k.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA1})
	require.NoError(t, err)
	assert.Equal(t, secret, pt)

	// SoftHSM 2.6.1 refuses OAEP-SHA256; other tokens accept it. Either way the answer
	// must be a round trip or a clear ErrUnsupported, never an obscure CKR code.
	ct256, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, secret, nil)
	require.NoError(t, err)
	pt, err = k.Decrypt(rand.Reader, ct256, &rsa.OAEPOptions{Hash: crypto.SHA256})
	if err != nil {
		assert.ErrorIs(t, err, hsm.ErrUnsupported)
		assert.Contains(t, err.Error(), "OAEP")
		assert.ErrorIs(t, k.ProbeOAEP(ctx, crypto.SHA256, crypto.SHA256), hsm.ErrUnsupported)
	} else {
		assert.Equal(t, secret, pt)
	}
	assert.NoError(t, k.ProbeOAEP(ctx, crypto.SHA1, crypto.SHA1))

	// A ciphertext for another key fails without revealing anything but failure.
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	bad, err := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, &other.PublicKey, secret, nil)
	require.NoError(t, err)
	_, err = k.Decrypt(rand.Reader, bad, &rsa.OAEPOptions{Hash: crypto.SHA1})
	assert.Error(t, err)

	// The failure leaves the pool usable, even on modules that keep the failed
	// operation active on its session (tpm2-pkcs11).
	pt, err = k.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA1})
	require.NoError(t, err)
	assert.Equal(t, secret, pt)
}

func TestECDHMatchesSoftwarePeer(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "ecdh", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageKeyExchange})
	if !softhsmtest.Supports(softhsmtest.ECDH) {
		assert.ErrorIs(t, err, hsm.ErrUnsupported)
		assert.ErrorContains(t, err, "ECDH (CKM_ECDH1_DERIVE)")
		assert.ErrorContains(t, err, tok.Label())
		softhsmtest.Require(t, softhsmtest.ECDH)
	}
	require.NoError(t, err)
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	require.NoError(t, err)
	got, err := k.ECDH(ctx, peer.PublicKey())
	require.NoError(t, err)
	tokPub, err := k.Public().(*ecdsa.PublicKey).ECDH()
	require.NoError(t, err)
	want, err := peer.ECDH(tokPub)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	other, err := ecdh.P384().GenerateKey(rand.Reader)
	require.NoError(t, err)
	_, err = k.ECDH(ctx, other.PublicKey())
	assert.ErrorIs(t, err, hsm.ErrBadRequest)
}

func TestClearErrors(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	signKey, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "s", Algorithm: hsm.RSA2048, Usage: hsm.UsageSign})
	require.NoError(t, err)
	kexAlg := hsm.ECDSAP256
	if !softhsmtest.Supports(softhsmtest.ECDH) {
		kexAlg = hsm.RSA2048
	}
	kexKey, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "x", Algorithm: kexAlg, Usage: hsm.UsageKeyExchange})
	require.NoError(t, err)
	mod := softhsmtest.Module(t)
	digest := sha256.Sum256([]byte("x"))
	t.Setenv("WRONG_PIN", "not-the-pin-9876")
	fresh := softhsmtest.NewLabel(t) + "-fresh"
	softhsmtest.InitToken(t, fresh)

	cases := []struct {
		name    string
		run     func() error
		is      error
		mention string
	}{
		// Login state is per application, so the wrong PIN goes to a token this process
		// has not logged in to yet.
		{"wrong PIN", func() error {
			_, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: fresh}, PIN: "env:WRONG_PIN"})
			return err
		}, hsm.ErrPINIncorrect, "fresh"},
		{"PIN variable unset", func() error {
			_, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: tok.Label()}, PIN: "env:SETPAY_NO_SUCH_VAR"})
			return err
		}, hsm.ErrPINSource, "SETPAY_NO_SUCH_VAR"},
		{"missing module", func() error {
			_, err := hsm.OpenModule("/nonexistent/libnothing.so", nil)
			return err
		}, hsm.ErrModule, "/nonexistent/libnothing.so"},
		{"unknown token", func() error {
			_, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: "no-such-token"}, PIN: "env:" + softhsmtest.PINEnv})
			return err
		}, hsm.ErrTokenNotFound, "no-such-token"},
		{"unknown key", func() error {
			_, err := tok.FindKey(ctx, "no-such-key")
			return err
		}, hsm.ErrKeyNotFound, "no-such-key"},
		{"decrypt with a signing key", func() error {
			_, err := signKey.Decrypt(rand.Reader, make([]byte, 256), &rsa.OAEPOptions{Hash: crypto.SHA1})
			return err
		}, hsm.ErrWrongUsage, "object=s"},
		{"sign with a key-exchange key", func() error {
			_, err := kexKey.Sign(rand.Reader, digest[:], crypto.SHA256)
			return err
		}, hsm.ErrWrongUsage, "object=x"},
		{"PKCS#1 v1.5 decryption", func() error {
			_, err := signKey.Decrypt(rand.Reader, make([]byte, 256), nil)
			return err
		}, hsm.ErrWrongUsage, "object=s"},
		{"digest of the wrong size", func() error {
			_, err := signKey.Sign(rand.Reader, digest[:20], crypto.SHA256)
			return err
		}, hsm.ErrBadRequest, "object=s"},
		{"duplicate label", func() error {
			_, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "s", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
			return err
		}, hsm.ErrKeyExists, "object=s"},
		{"unknown algorithm", func() error {
			_, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "d", Algorithm: "dsa1024", Usage: hsm.UsageSign})
			return err
		}, hsm.ErrBadRequest, "dsa1024"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.run()
			require.Error(t, err)
			assert.ErrorIs(t, err, c.is)
			assert.Contains(t, err.Error(), c.mention)
			assert.NotContains(t, err.Error(), softhsmtest.PIN)
			assert.NotContains(t, err.Error(), "not-the-pin-9876")
		})
	}
}

func TestRenameAndDelete(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "old", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	require.NoError(t, tok.RenameKey(ctx, k, "new"))
	_, err = tok.FindKey(ctx, "old")
	assert.ErrorIs(t, err, hsm.ErrKeyNotFound)
	found, err := tok.FindKey(ctx, "new")
	require.NoError(t, err)
	assert.Equal(t, k.ID(), found.ID())
	u, err := hsm.ParseURI(found.URI())
	require.NoError(t, err)
	byURI, err := tok.KeyByURI(ctx, u)
	require.NoError(t, err)
	assert.Equal(t, k.Public(), byURI.Public())

	require.NoError(t, tok.DeleteKey(ctx, found))
	_, err = tok.FindKey(ctx, "new")
	assert.ErrorIs(t, err, hsm.ErrKeyNotFound)
	objs, err := tok.Objects(ctx)
	require.NoError(t, err)
	assert.Empty(t, objs, "public half deleted too")
}

// TestSessionRecovery takes every session (or the login) of the token away from
// another PKCS#11 handle while goroutines sign, as a token reset or an HSM failover
// would; no caller may see an error.
//
// SoftHSM frees a session's state in C_CloseAllSessions even while another thread is
// inside C_Sign on it, and then crashes; so the signers pause (an RWMutex) only for the
// instant of the reset. The sessions they hold are still dead when they resume.
func TestSessionRecovery(t *testing.T) {
	ctx := context.Background()
	other := pkcs11.New(softhsmtest.Module(t).Path())
	require.NotNil(t, other)
	_ = other.Initialize() // answers CKR_CRYPTOKI_ALREADY_INITIALIZED: same process, same library
	t.Cleanup(other.Destroy)

	cases := []struct {
		name string
		// minRecoveries: closing every session forces one recovery per reset; after a
		// logout, the first goroutine to recover logs the whole application back in, so
		// another may then succeed without one — what matters is that none fails.
		minRecoveries uint64
		reset         func(t *testing.T, slot uint)
	}{
		{"close all sessions", 5, func(t *testing.T, slot uint) {
			require.NoError(t, other.CloseAllSessions(slot))
		}},
		{"logout", 1, func(t *testing.T, slot uint) {
			sh, err := other.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
			require.NoError(t, err)
			require.NoError(t, other.Logout(sh))
			require.NoError(t, other.CloseSession(sh))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := softhsmtest.NewToken(t)
			k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "rec", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
			require.NoError(t, err)
			// Each reset waits, with a deadline, for signatures after the one before from
			// every signer: a condition that holds on any machine, however slow.
			var pause sync.RWMutex
			const resets, between = 5, 50
			failed, signed := runSigners(t, k, 4, &pause, func(waitFor func(int64)) {
				for range resets {
					waitFor(between)
					pause.Lock()
					c.reset(t, tok.Info().Slot)
					pause.Unlock()
				}
				waitFor(between)
			})
			assert.Zero(t, failed, "failed operations")
			assert.GreaterOrEqual(t, tok.Stats().Recoveries.Load(), c.minRecoveries, "recoveries")
			assert.GreaterOrEqual(t, signed, int64((resets+1)*between), "signatures")
		})
	}
}

func TestURIRoundTrip(t *testing.T) {
	cases := []struct {
		in      string
		ok      bool
		wantErr error
		check   func(t *testing.T, u hsm.URI)
	}{
		{in: "pkcs11:token=gw;object=gateway-sign;type=private", ok: true, check: func(t *testing.T, u hsm.URI) {
			assert.Equal(t, "gw", u.Token)
			assert.Equal(t, "gateway-sign", u.Object)
			assert.Equal(t, "private", u.Type)
		}},
		{in: "pkcs11:token=My%20Token;id=%01%02%ff?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/setpay/pin", ok: true, check: func(t *testing.T, u hsm.URI) {
			assert.Equal(t, "My Token", u.Token)
			assert.Equal(t, []byte{1, 2, 0xff}, u.ID)
			assert.Equal(t, "/usr/lib/softhsm/libsofthsm2.so", u.ModulePath)
			assert.Equal(t, hsm.PINSource("file:/etc/setpay/pin"), u.PINSource)
		}},
		{in: "pkcs11:slot-id=3;object=a", ok: true, check: func(t *testing.T, u hsm.URI) {
			require.NotNil(t, u.SlotID)
			assert.Equal(t, uint(3), *u.SlotID)
		}},
		{in: "pkcs11:token=a?pin-value=1234", wantErr: hsm.ErrBadRequest},
		{in: "pkcs11:token=a;token=b", wantErr: hsm.ErrBadRequest},
		{in: "pkcs11:bogus=1", wantErr: hsm.ErrBadRequest},
		{in: "pkcs11:id=%zz", wantErr: hsm.ErrBadRequest},
		{in: "pkcs11:id=%0", wantErr: hsm.ErrBadRequest},
		{in: "pkcs11:type=weird", wantErr: hsm.ErrBadRequest},
		{in: "file:/x", wantErr: hsm.ErrBadRequest},
		{in: "pkcs11:object", wantErr: hsm.ErrBadRequest},
		// Found by FuzzParseURI: an unescaped 1400-byte id parsed, but its formatted
		// form (every id byte percent-encoded) was too long to parse again.
		{in: "pkcs11:id=" + strings.Repeat("I", 1400), wantErr: hsm.ErrBadRequest},
		{in: "pkcs11:object=" + strings.Repeat("a", 257), wantErr: hsm.ErrBadRequest},
		{in: "pkcs11:id=" + strings.Repeat("%ff", 256) + ";object=" + strings.Repeat("%00", 256) + "?module-path=" + strings.Repeat("%2f", 1024), ok: true,
			check: func(t *testing.T, u hsm.URI) { assert.Len(t, u.ID, 256) }},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			u, err := hsm.ParseURI(c.in)
			if !c.ok {
				require.Error(t, err)
				assert.ErrorIs(t, err, c.wantErr)
				assert.NotContains(t, err.Error(), "1234")
				return
			}
			require.NoError(t, err)
			c.check(t, u)
			again, err := hsm.ParseURI(u.String())
			require.NoError(t, err)
			assert.Equal(t, u, again)
		})
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"pkcs11:token=gw;object=k;type=private", "pkcs11:id=%01%02?module-path=/x&pin-source=env:P", "pkcs11:slot-id=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := hsm.ParseURI(s)
		if err != nil {
			return
		}
		again, err := hsm.ParseURI(u.String())
		if err != nil {
			t.Fatalf("formatted URI %q does not parse: %v", u.String(), err)
		}
		if again.String() != u.String() {
			t.Fatalf("round trip changed %q to %q", u.String(), again.String())
		}
	})
}

func TestECDSADEREncodingMatchesStandardLibrary(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	for _, alg := range []hsm.Algorithm{hsm.ECDSAP256, hsm.ECDSAP384} {
		k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "der-" + string(alg), Algorithm: alg, Usage: hsm.UsageSign})
		require.NoError(t, err)
		// Many signatures so r or s with a high bit or a leading zero byte turn up.
		for i := range 200 {
			d := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
			sig, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
			require.NoError(t, err)
			var parsed struct{ R, S *big.Int }
			rest, err := asn1.Unmarshal(sig, &parsed)
			require.NoError(t, err)
			require.Empty(t, rest)
			again, err := asn1.Marshal(parsed)
			require.NoError(t, err)
			require.Equal(t, again, sig, "canonical DER")
			require.True(t, ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d[:], sig))
		}
	}
}

// TestTokenRefusesMechanismsOutsideTheKeysList goes around this package to the raw
// PKCS#11 API, as any other program holding the PIN could, and asks each key for a
// mechanism outside its CKA_ALLOWED_MECHANISMS: the token itself must refuse. Whether
// the module should take the list comes from softhsmtest's capability table, not from
// what the token did: a token that silently dropped the list fails here.
func TestTokenRefusesMechanismsOutsideTheKeysList(t *testing.T) {
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	cases := []struct {
		alg     hsm.Algorithm
		usage   hsm.Usage
		allowed []uint // the list the key must carry
		init    func(p *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error
	}{
		{hsm.RSA2048, hsm.UsageKeyExchange, []uint{pkcs11.CKM_RSA_PKCS_OAEP}, func(p *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
			return p.DecryptInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}, h) // PKCS#1 v1.5: a padding oracle
		}},
		{hsm.RSA2048, hsm.UsageSign, []uint{pkcs11.CKM_RSA_PKCS, pkcs11.CKM_RSA_PKCS_PSS}, func(p *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
			return p.SignInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA1_RSA_PKCS, nil)}, h)
		}},
		{hsm.ECDSAP256, hsm.UsageSign, []uint{pkcs11.CKM_ECDSA}, func(p *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
			return p.SignInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA_SHA1, nil)}, h)
		}},
	}
	p := tok.Module().Raw()
	sh, err := p.OpenSession(tok.Info().Slot, pkcs11.CKF_SERIAL_SESSION)
	require.NoError(t, err)
	defer func() { _ = p.CloseSession(sh) }()
	for _, c := range cases {
		t.Run(string(c.alg)+"-"+string(c.usage), func(t *testing.T) {
			k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "allowed-" + string(c.alg) + "-" + string(c.usage), Algorithm: c.alg, Usage: c.usage})
			require.NoError(t, err)
			if !softhsmtest.Supports(softhsmtest.AllowedMechanisms) {
				assert.False(t, tok.RestrictsMechanisms(), "%s is listed as refusing the list but took it: update softhsmtest", softhsmtest.Kind())
				softhsmtest.Require(t, softhsmtest.AllowedMechanisms)
			}
			require.True(t, tok.RestrictsMechanisms(), "%s takes CKA_ALLOWED_MECHANISMS, but this token lost it", softhsmtest.Kind())
			require.NoError(t, p.FindObjectsInit(sh, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, k.ID())}))
			hs, _, err := p.FindObjects(sh, 1)
			require.NoError(t, p.FindObjectsFinal(sh))
			require.NoError(t, err)
			require.Len(t, hs, 1)

			a, err := p.GetAttributeValue(sh, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ALLOWED_MECHANISMS, nil)})
			if softhsmtest.Supports(softhsmtest.ReadAllowedMechanisms) {
				require.NoError(t, err)
				require.Len(t, a, 1)
				var got []uint
				for v := a[0].Value; len(v) >= 8; v = v[8:] {
					got = append(got, uint(binary.NativeEndian.Uint64(v)))
				}
				assert.ElementsMatch(t, c.allowed, got, "CKA_ALLOWED_MECHANISMS")
			} else {
				assert.Error(t, err, "%s is listed as unable to read the list back but read it: update softhsmtest", softhsmtest.Kind())
			}

			err = c.init(p, sh, hs[0])
			require.Error(t, err, "the token let a key use a mechanism outside its list")
			code, _ := hsm.CKR(err)
			assert.Contains(t, []pkcs11.Error{pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_KEY_TYPE_INCONSISTENT}, code, "%v", err)
		})
	}
}
