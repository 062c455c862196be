package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/hsm/internal/p11fake"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

// The tests in this file run package hsm on p11fake, below the PKCS#11 seam, so every
// recovery branch runs on every test run, not only when a real token happens to fail
// at the right moment. The real-token tests (TestSessionRecovery and the rest) stay.

const fakeLabel = "fake"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fakeToken opens a token on a fresh fake module; quirks adjusts the slot first.
func fakeToken(t *testing.T, quirks func(*p11fake.Slot)) (*p11fake.Fake, *hsm.Token) {
	t.Helper()
	f := p11fake.New()
	slot := f.AddToken(fakeLabel, softhsmtest.PIN)
	if quirks != nil {
		quirks(slot)
	}
	mod, err := hsm.NewModule("p11fake", f, quiet())
	require.NoError(t, err)
	t.Cleanup(func() { _ = mod.Close() })
	tok, err := mod.OpenToken(context.Background(), hsm.TokenConfig{
		Selector: hsm.Selector{Label: fakeLabel}, PIN: hsm.PINSource("env:" + softhsmtest.PINEnv), Logger: quiet(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tok.Close() })
	return f, tok
}

func ckrOf(t *testing.T, err error) pkcs11.Error {
	t.Helper()
	c, ok := hsm.CKR(err)
	require.True(t, ok, "no CKR code in %v", err)
	return c
}

// TestRecoveryBranches drives each branch of Token.do and Key.withHandle with one
// injected answer or one event, and checks what the caller sees and what it cost.
func TestRecoveryBranches(t *testing.T) {
	const slot = 0
	e := func(c uint) error { return pkcs11.Error(c) }
	cases := []struct {
		name   string
		quirks func(*p11fake.Slot)
		event  func(t *testing.T, f *p11fake.Fake, tok *hsm.Token, k *hsm.Key)
		// wantErr is the CKR the caller gets; 0 means the signature must verify.
		wantErr    uint
		recoveries uint64
		// extra calls beyond one SignInit/Sign pair, when the branch is about them
		signInits int
	}{
		{name: "session handle invalid", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("SignInit", e(pkcs11.CKR_SESSION_HANDLE_INVALID))
		}, recoveries: 1, signInits: 2},
		{name: "session closed", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("Sign", e(pkcs11.CKR_SESSION_CLOSED))
		}, recoveries: 1, signInits: 2},
		{name: "device removed", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("SignInit", e(pkcs11.CKR_DEVICE_REMOVED))
		}, recoveries: 1, signInits: 2},
		{name: "token not present", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("SignInit", e(pkcs11.CKR_TOKEN_NOT_PRESENT))
		}, recoveries: 1, signInits: 2},
		// issue 11 item 8: the token, not the session, went: find it again first.
		{name: "device error: the token found again in its slot", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("SignInit", e(pkcs11.CKR_DEVICE_ERROR))
		}, recoveries: 1, signInits: 2},
		{name: "cryptoki not initialized: the token found again", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("Sign", e(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED))
		}, recoveries: 1, signInits: 2},
		// A token that answers so twice but stays in its slot is not unavailable: the
		// caller gets the answer as it is (no request can make the token look gone).
		{name: "token gone twice but still in its slot: the answer as it is", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("SignInit", e(pkcs11.CKR_TOKEN_NOT_PRESENT), e(pkcs11.CKR_DEVICE_REMOVED))
		}, wantErr: pkcs11.CKR_DEVICE_REMOVED, recoveries: 1, signInits: 2},
		{name: "device error on every try, token in its slot: not unavailable", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("SignInit", e(pkcs11.CKR_DEVICE_ERROR), e(pkcs11.CKR_DEVICE_ERROR), e(pkcs11.CKR_DEVICE_ERROR))
		}, wantErr: pkcs11.CKR_DEVICE_ERROR, recoveries: 1, signInits: 2},
		{name: "user not logged in", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("Sign", e(pkcs11.CKR_USER_NOT_LOGGED_IN))
		}, recoveries: 1, signInits: 2},
		{name: "give up after a failed retry", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("SignInit", e(pkcs11.CKR_SESSION_HANDLE_INVALID), e(pkcs11.CKR_SESSION_HANDLE_INVALID))
		}, wantErr: pkcs11.CKR_SESSION_HANDLE_INVALID, recoveries: 1, signInits: 2},
		{name: "operation active: another session", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("SignInit", e(pkcs11.CKR_OPERATION_ACTIVE))
		}, signInits: 2},
		{name: "operation active twice: give up", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("SignInit", e(pkcs11.CKR_OPERATION_ACTIVE), e(pkcs11.CKR_OPERATION_ACTIVE))
		}, wantErr: pkcs11.CKR_OPERATION_ACTIVE, signInits: 2},
		{name: "login lost, key hidden (SoftHSM)", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.LogoutAll(slot)
		}, recoveries: 1, signInits: 2},
		{name: "login lost, CKR_USER_NOT_LOGGED_IN (tpm2-pkcs11)", quirks: func(s *p11fake.Slot) {
			s.LoggedOut = pkcs11.CKR_USER_NOT_LOGGED_IN
		}, event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.LogoutAll(slot)
		}, recoveries: 1, signInits: 2},
		// issue 17: tpm2-pkcs11 drops the operation when the login goes between C_SignInit
		// and C_Sign, and answers CKR_OPERATION_NOT_INITIALIZED.
		{name: "login lost between init and sign (tpm2-pkcs11)", quirks: func(s *p11fake.Slot) {
			s.LoggedOutSign = pkcs11.CKR_OPERATION_NOT_INITIALIZED
		}, event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Before("Sign", func() { f.LogoutAll(slot) })
		}, recoveries: 1, signInits: 2},
		// The same, when another goroutine has logged the application in again before
		// this one asks the session's state: no recovery is due, a retry is.
		{name: "operation dropped, login already back", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("Sign", e(pkcs11.CKR_OPERATION_NOT_INITIALIZED))
		}, signInits: 2},
		{name: "operation dropped twice: give up", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("Sign", e(pkcs11.CKR_OPERATION_NOT_INITIALIZED), e(pkcs11.CKR_OPERATION_NOT_INITIALIZED))
		}, wantErr: pkcs11.CKR_OPERATION_NOT_INITIALIZED, signInits: 2},
		{name: "stale handle, still logged in: find the key again", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.RenumberObjects(slot)
		}, signInits: 2},
		{name: "stale handle twice: give up", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("SignInit", e(pkcs11.CKR_KEY_HANDLE_INVALID), e(pkcs11.CKR_OBJECT_HANDLE_INVALID))
		}, wantErr: pkcs11.CKR_OBJECT_HANDLE_INVALID, signInits: 2},
		{name: "stale handle, key deleted", event: func(t *testing.T, _ *p11fake.Fake, tok *hsm.Token, k *hsm.Key) {
			require.NoError(t, tok.DeleteKey(context.Background(), k))
		}, wantErr: pkcs11.CKR_KEY_HANDLE_INVALID, signInits: 1},
		{name: "login lost and the session check fails too", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.LogoutAll(slot)
			f.Fail("GetSessionInfo", e(pkcs11.CKR_SESSION_HANDLE_INVALID))
		}, recoveries: 1, signInits: 2},
		{name: "other failure: no retry", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Fail("Sign", e(pkcs11.CKR_FUNCTION_FAILED))
		}, wantErr: pkcs11.CKR_FUNCTION_FAILED, signInits: 1},
		{name: "C_CloseAllSessions", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			require.NoError(t, f.CloseAllSessions(slot))
		}, recoveries: 1, signInits: 2},
		// Sessions, login and handles all gone: recover, then find the key again.
		{name: "token re-inserted", event: func(t *testing.T, f *p11fake.Fake, _ *hsm.Token, _ *hsm.Key) {
			f.Reinsert(slot)
		}, recoveries: 1, signInits: 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			f, tok := fakeToken(t, c.quirks)
			k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "k", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
			require.NoError(t, err)
			digest := sha256.Sum256([]byte(c.name))
			// A first signature puts a session in the pool, as in a running service.
			_, err = k.Sign(rand.Reader, digest[:], crypto.SHA256)
			require.NoError(t, err)
			inits := f.Calls("SignInit")

			c.event(t, f, tok, k)
			sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
			if c.wantErr != 0 {
				require.Error(t, err)
				assert.Equal(t, pkcs11.Error(c.wantErr), ckrOf(t, err), "%v", err)
				assert.Contains(t, err.Error(), "object=k")
				assert.NotErrorIs(t, err, hsm.ErrTokenUnavailable, "the token stayed in its slot")
				assert.NoError(t, tok.Health())
			} else {
				require.NoError(t, err)
				assert.True(t, ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig))
			}
			assert.Equal(t, c.recoveries, tok.Stats().Recoveries.Load(), "recoveries")
			assert.Equal(t, c.signInits, f.Calls("SignInit")-inits, "C_SignInit calls")
			// No session leaks, whatever happened.
			assert.Equal(t, int64(f.Sessions()), tok.Stats().SessionsOpen.Load(), "sessions open")
			if c.wantErr == 0 {
				assert.True(t, f.LoggedIn(slot), "logged in again")
				// And the pool keeps working.
				_, err = k.Sign(rand.Reader, digest[:], crypto.SHA256)
				assert.NoError(t, err)
			}
		})
	}
}

// TestRecoveryLeavesNoFailedOperation signs from several goroutines on the fake while
// the token loses its sessions, its login or its place again and again, with no pause:
// the fake, unlike SoftHSM, survives a reset during an operation. Each reset waits for
// signatures after the one before, with a deadline, so the test holds on any machine.
func TestRecoveryLeavesNoFailedOperation(t *testing.T) {
	events := []struct {
		name   string
		quirks func(*p11fake.Slot)
		reset  func(f *p11fake.Fake)
	}{
		{"close all sessions", nil, func(f *p11fake.Fake) { _ = f.CloseAllSessions(0) }},
		{"logout (SoftHSM)", nil, func(f *p11fake.Fake) { f.LogoutAll(0) }},
		{"logout (tpm2-pkcs11)", func(s *p11fake.Slot) {
			s.LoggedOut, s.LoggedOutSign = pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_OPERATION_NOT_INITIALIZED
		}, func(f *p11fake.Fake) { f.LogoutAll(0) }},
		{"token re-inserted", nil, func(f *p11fake.Fake) { f.Reinsert(0) }},
	}
	for _, ev := range events {
		t.Run(ev.name, func(t *testing.T) {
			f, tok := fakeToken(t, ev.quirks)
			k, err := tok.GenerateKey(context.Background(), hsm.KeySpec{Label: "k", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
			require.NoError(t, err)
			failed, signed := runSigners(t, k, 4, nil, func(waitFor func(int64)) {
				for range 20 {
					waitFor(20)
					ev.reset(f)
				}
				waitFor(20)
			})
			assert.Zero(t, failed, "failed operations")
			assert.GreaterOrEqual(t, signed, int64(21*20))
			assert.GreaterOrEqual(t, tok.Stats().Recoveries.Load(), uint64(1))
		})
	}
}

// runSigners signs with k from n goroutines while drive runs; each signature holds
// pause (when not nil) shared, so drive can hold it for an event a module cannot take
// during an operation. drive's waitFor(m)
// returns once m more signatures verified after the call and every goroutine finished
// at least two of them, so no operation meets two of drive's events (the first may
// still meet what the event before left behind: a dead idle session, a stale handle); it fails the test
// after a minute without that. runSigners returns the failed and verified operations.
func runSigners(t *testing.T, k *hsm.Key, n int, pause *sync.RWMutex, drive func(waitFor func(int64))) (failed, signed int64) {
	t.Helper()
	digest := sha256.Sum256([]byte("recover"))
	pub := k.Public().(*ecdsa.PublicKey)
	var nSigned, nFailed atomic.Int64
	each := make([]atomic.Int64, n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if pause != nil {
					pause.RLock()
				}
				sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
				if pause != nil {
					pause.RUnlock()
				}
				if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
					nFailed.Add(1)
					t.Errorf("sign during recovery: %v", err)
					continue
				}
				nSigned.Add(1)
				each[i].Add(1)
			}
		}()
	}
	waitFor := func(m int64) {
		want := nSigned.Load() + m
		wantEach := make([]int64, n)
		for i := range each {
			wantEach[i] = each[i].Load() + 2
		}
		done := func() bool {
			for i := range each {
				if each[i].Load() < wantEach[i] {
					return false
				}
			}
			return nSigned.Load() >= want
		}
		deadline := time.Now().Add(time.Minute)
		for !done() {
			if time.Now().After(deadline) {
				t.Errorf("only %d of %d signatures, or a signer stuck, within a minute", nSigned.Load(), want)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	drive(waitFor)
	close(stop)
	wg.Wait()
	return nFailed.Load(), nSigned.Load()
}

// TestKeyTemplateFallbacks drives generateKeyPair's fallbacks: a module refusing the
// public half's usage attributes, CKA_ALLOWED_MECHANISMS, both, or the template itself.
func TestKeyTemplateFallbacks(t *testing.T) {
	cases := []struct {
		name   string
		quirks func(*p11fake.Slot)
		inject []error // answers of the first C_GenerateKeyPair calls
		// wantErr is the CKR GenerateKey fails with; 0 means it succeeds
		wantErr      uint
		calls        int  // C_GenerateKeyPair calls for the first key
		restricts    bool // RestrictsMechanisms afterwards
		secondCalls  int  // C_GenerateKeyPair calls for a second key
		wantAllowed  bool // the private key carries CKA_ALLOWED_MECHANISMS
		wantPubUsage bool // the public key carries CKA_VERIFY
	}{
		{name: "everything accepted", calls: 1, restricts: true, secondCalls: 1, wantAllowed: true, wantPubUsage: true},
		{name: "no CKA_ALLOWED_MECHANISMS", quirks: func(s *p11fake.Slot) {
			s.RefusePrivate = map[uint]pkcs11.Error{pkcs11.CKA_ALLOWED_MECHANISMS: pkcs11.CKR_ATTRIBUTE_TYPE_INVALID}
		}, calls: 2, restricts: false, secondCalls: 1, wantPubUsage: true},
		{name: "no usage on public keys (tpm2-pkcs11)", quirks: func(s *p11fake.Slot) {
			s.RefusePublic = map[uint]pkcs11.Error{pkcs11.CKA_VERIFY: pkcs11.CKR_GENERAL_ERROR}
		}, calls: 3, restricts: true, secondCalls: 1, wantAllowed: true},
		{name: "neither", quirks: func(s *p11fake.Slot) {
			s.RefusePublic = map[uint]pkcs11.Error{pkcs11.CKA_VERIFY: pkcs11.CKR_ATTRIBUTE_VALUE_INVALID}
			s.RefusePrivate = map[uint]pkcs11.Error{pkcs11.CKA_ALLOWED_MECHANISMS: pkcs11.CKR_TEMPLATE_INCONSISTENT}
		}, calls: 4, restricts: false, secondCalls: 1},
		{name: "template refused whatever is dropped: the first answer", quirks: func(s *p11fake.Slot) {
			s.RefusePrivate = map[uint]pkcs11.Error{pkcs11.CKA_TOKEN: pkcs11.CKR_ATTRIBUTE_READ_ONLY}
		}, wantErr: pkcs11.CKR_ATTRIBUTE_READ_ONLY, calls: 4, restricts: true},
		{name: "another failure during the fallback", inject: []error{
			pkcs11.Error(pkcs11.CKR_ATTRIBUTE_TYPE_INVALID), pkcs11.Error(pkcs11.CKR_DEVICE_MEMORY),
		}, wantErr: pkcs11.CKR_DEVICE_MEMORY, calls: 2, restricts: true},
		{name: "not a template answer: no fallback", inject: []error{pkcs11.Error(pkcs11.CKR_DEVICE_MEMORY)},
			wantErr: pkcs11.CKR_DEVICE_MEMORY, calls: 1, restricts: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			f, tok := fakeToken(t, c.quirks)
			f.Fail("GenerateKeyPair", c.inject...)
			k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "k1", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
			assert.Equal(t, c.calls, f.Calls("GenerateKeyPair"), "C_GenerateKeyPair calls")
			assert.Equal(t, c.restricts, tok.RestrictsMechanisms(), "RestrictsMechanisms")
			if c.wantErr != 0 {
				require.Error(t, err)
				assert.Equal(t, pkcs11.Error(c.wantErr), ckrOf(t, err), "%v", err)
				objs, err := tok.Objects(ctx)
				require.NoError(t, err)
				assert.Empty(t, objs, "nothing half-made")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, hsm.UsageSign, k.Usage())
			objs, err := tok.Objects(ctx)
			require.NoError(t, err)
			require.Len(t, objs, 2)
			for _, o := range objs {
				if o.Class == "public" {
					_, has := o.Flags["CKA_VERIFY"]
					assert.Equal(t, c.wantPubUsage, has, "public CKA_VERIFY")
				}
			}
			assert.Equal(t, c.wantAllowed, hasAllowed(t, f, tok, k), "CKA_ALLOWED_MECHANISMS")
			// The token remembers what the module refused: the next key costs one call.
			before := f.Calls("GenerateKeyPair")
			_, err = tok.GenerateKey(ctx, hsm.KeySpec{Label: "k2", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
			require.NoError(t, err)
			assert.Equal(t, c.secondCalls, f.Calls("GenerateKeyPair")-before, "second key")
		})
	}
}

// hasAllowed asks the fake directly whether the key's private half carries a list.
func hasAllowed(t *testing.T, f *p11fake.Fake, tok *hsm.Token, k *hsm.Key) bool {
	t.Helper()
	sh, err := f.OpenSession(tok.Info().Slot, pkcs11.CKF_SERIAL_SESSION)
	require.NoError(t, err)
	defer func() { _ = f.CloseSession(sh) }()
	require.NoError(t, f.FindObjectsInit(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, k.ID())}))
	hs, _, err := f.FindObjects(sh, 1)
	require.NoError(t, err)
	require.NoError(t, f.FindObjectsFinal(sh))
	require.Len(t, hs, 1)
	_, err = f.GetAttributeValue(sh, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ALLOWED_MECHANISMS, nil)})
	return err == nil
}

// TestGenerateKeyRecoversALostSession: key generation goes through the same recovery.
func TestGenerateKeyRecoversALostSession(t *testing.T) {
	f, tok := fakeToken(t, nil)
	require.NoError(t, f.CloseAllSessions(0))
	_, err := tok.GenerateKey(context.Background(), hsm.KeySpec{Label: "k", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	assert.Equal(t, uint64(1), tok.Stats().Recoveries.Load())
}

func TestOpenTokenFailuresOnTheFake(t *testing.T) {
	ctx := context.Background()
	t.Setenv("FAKE_WRONG_PIN", "wrong-pin-5678")
	cases := []struct {
		name    string
		fault   func(f *p11fake.Fake)
		pin     hsm.PINSource
		is      error
		wantCKR uint
	}{
		{"wrong PIN", func(*p11fake.Fake) {}, "env:FAKE_WRONG_PIN", hsm.ErrPINIncorrect, pkcs11.CKR_PIN_INCORRECT},
		{"login fails otherwise", func(f *p11fake.Fake) { f.Fail("Login", pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)) }, "", nil, pkcs11.CKR_DEVICE_ERROR},
		{"no session", func(f *p11fake.Fake) { f.Fail("OpenSession", pkcs11.Error(pkcs11.CKR_SESSION_COUNT)) }, "", nil, pkcs11.CKR_SESSION_COUNT},
		{"no mechanism list", func(f *p11fake.Fake) { f.Fail("GetMechanismList", pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)) }, "", nil, pkcs11.CKR_DEVICE_ERROR},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := p11fake.New()
			f.AddToken(fakeLabel, softhsmtest.PIN)
			mod, err := hsm.NewModule("p11fake", f, quiet())
			require.NoError(t, err)
			defer func() { _ = mod.Close() }()
			c.fault(f)
			pin := c.pin
			if pin == "" {
				pin = hsm.PINSource("env:" + softhsmtest.PINEnv)
			}
			_, err = mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: fakeLabel}, PIN: pin, Logger: quiet()})
			require.Error(t, err)
			if c.is != nil {
				assert.ErrorIs(t, err, c.is)
			}
			assert.Equal(t, pkcs11.Error(c.wantCKR), ckrOf(t, err))
			assert.NotContains(t, err.Error(), "wrong-pin-5678")
			assert.NotContains(t, err.Error(), softhsmtest.PIN)
			assert.Zero(t, f.Sessions(), "no session left open")
		})
	}
}

// TestOAEPOnTheFake covers the decryption paths a real token rarely takes: a probe
// whose answer is a lost session is not remembered, and a module that keeps a failed
// decryption active (tpm2-pkcs11) costs a session, not the next caller's operation.
func TestOAEPOnTheFake(t *testing.T) {
	ctx := context.Background()
	f, tok := fakeToken(t, func(s *p11fake.Slot) { s.KeepFailedOperation = true })
	k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "kex", Algorithm: hsm.RSA2048, Usage: hsm.UsageKeyExchange})
	require.NoError(t, err)
	pub := k.Public().(*rsa.PublicKey)
	secret := []byte("0123456789abcdef")

	lost := pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID)
	f.Fail("Decrypt", lost, lost)
	err = k.ProbeOAEP(ctx, crypto.SHA1, crypto.SHA1)
	require.Error(t, err)
	assert.Equal(t, lost, ckrOf(t, err))
	decrypts := f.Calls("Decrypt")
	require.NoError(t, k.ProbeOAEP(ctx, crypto.SHA1, crypto.SHA1), "a lost session is no answer about the token")
	require.NoError(t, k.ProbeOAEP(ctx, crypto.SHA1, crypto.SHA1))
	assert.Equal(t, decrypts+1, f.Calls("Decrypt"), "the answer is remembered once there is one")

	// MGF1 with another hash than the label's: the fake refuses it, and so must the probe.
	assert.ErrorIs(t, k.ProbeOAEP(ctx, crypto.SHA1, crypto.SHA256), hsm.ErrUnsupported)

	ct, err := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, pub, secret, nil)
	require.NoError(t, err)
	garbage := make([]byte, len(ct))
	_, err = k.Decrypt(rand.Reader, garbage, &rsa.OAEPOptions{Hash: crypto.SHA1})
	require.Error(t, err)
	closes := f.Calls("CloseSession")
	pt, err := k.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA1})
	require.NoError(t, err)
	assert.Equal(t, secret, pt)
	assert.Equal(t, closes+1, f.Calls("CloseSession"), "the spoilt session is closed")
}

// TestSessionLostBeforeItsLogin: an operation that had to open a session, and lost it
// to a C_CloseAllSessions between C_OpenSession and C_Login, recovers like any other.
// The other operation, which held the pool's session meanwhile, recovers too.
func TestSessionLostBeforeItsLogin(t *testing.T) {
	ctx := context.Background()
	f, tok := fakeToken(t, nil)
	k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "k", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	digest := sha256.Sum256([]byte("x"))
	// While the outer signature holds the only pooled session, a second one, from
	// another goroutine, must open its own; its login comes just after every session is
	// closed. The outer one goes on once that has happened.
	inner := make(chan error, 1)
	f.Before("Sign", func() {
		closed := make(chan struct{})
		f.Before("Login", func() {
			_ = f.CloseAllSessions(0)
			close(closed)
		})
		go func() {
			_, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
			inner <- err
		}()
		<-closed
	})
	_, err = k.Sign(rand.Reader, digest[:], crypto.SHA256)
	assert.NoError(t, err, "outer")
	assert.NoError(t, <-inner, "inner")
	assert.GreaterOrEqual(t, tok.Stats().Recoveries.Load(), uint64(1))
	assert.Equal(t, int64(f.Sessions()), tok.Stats().SessionsOpen.Load(), "sessions open")
}
