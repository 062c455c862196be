package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/hsm/internal/p11fake"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

// The tests in this file cover issue 11 item 8 on the fake: a token that goes away
// (its SoftHSM directory moved, the library finalised or re-initialised by someone
// else) is found again by its serial, the module re-initialised when that is what it
// takes, bounded by a backoff, and every key found again by CKA_ID. Real SoftHSM:
// TestTokenDirectoryMovedAwayAndBack.

// stepClock is a clock the test moves by hand.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// goneFixture is a token on a fake module with two signing keys and a clock for the
// module's re-initialisation backoff.
type goneFixture struct {
	f      *p11fake.Fake
	tok    *hsm.Token
	clock  *stepClock
	k1, k2 *hsm.Key
}

func newGoneFixture(t *testing.T, setup func(*p11fake.Fake)) *goneFixture {
	t.Helper()
	f := p11fake.New()
	if setup != nil {
		setup(f)
	}
	f.AddToken(fakeLabel, softhsmtest.PIN)
	mod, err := hsm.NewModule("p11fake", f, quiet())
	require.NoError(t, err)
	t.Cleanup(func() { _ = mod.Close() })
	clock := &stepClock{now: time.Unix(1_800_000_000, 0)}
	hsm.SetReinitClock(mod, clock.Now)
	tok, err := mod.OpenToken(context.Background(), hsm.TokenConfig{
		Selector: hsm.Selector{Label: fakeLabel}, PIN: hsm.PINSource("env:" + softhsmtest.PINEnv), Logger: quiet(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tok.Close() })
	fx := &goneFixture{f: f, tok: tok, clock: clock}
	fx.k1, err = tok.GenerateKey(context.Background(), hsm.KeySpec{Label: "k1", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	fx.k2, err = tok.GenerateKey(context.Background(), hsm.KeySpec{Label: "k2", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	fx.mustSign(t)
	return fx
}

// sign signs with k and reports the error; a signature must verify with k's own
// public key (a handle from before a re-initialisation may name the other key).
func (fx *goneFixture) sign(t *testing.T, k *hsm.Key) error {
	t.Helper()
	digest := sha256.Sum256([]byte("gone"))
	sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return err
	}
	assert.True(t, ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig), "signature by %s verifies with its own key", k.Label())
	return nil
}

func (fx *goneFixture) mustSign(t *testing.T) {
	t.Helper()
	require.NoError(t, fx.sign(t, fx.k1))
	require.NoError(t, fx.sign(t, fx.k2))
}

// requireUnavailable checks the error a caller gets while the token is gone.
func requireUnavailable(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	assert.ErrorIs(t, err, hsm.ErrTokenUnavailable, "%v", err)
	assert.True(t, hsm.Unavailable(err))
	assert.NotErrorIs(t, err, hsm.ErrKeyNotFound, "a token that is away is not a missing key")
	assert.NotContains(t, err.Error(), softhsmtest.PIN)
}

// TestTokenGoneBranches drives each way a token can go and come back.
func TestTokenGoneBranches(t *testing.T) {
	t.Run("directory moved away and back (SoftHSM): module re-initialised, with backoff", func(t *testing.T) {
		fx := newGoneFixture(t, func(f *p11fake.Fake) { f.AwayFailsInitialize, f.RenumberSlots = true, true })
		slotBefore := fx.tok.Info().Slot
		changed := fx.tok.HealthChanged()
		fx.f.MoveAway(0)

		requireUnavailable(t, fx.sign(t, fx.k1))
		require.Error(t, fx.tok.Health())
		assert.ErrorIs(t, fx.tok.Health(), hsm.ErrTokenUnavailable)
		select {
		case <-changed:
		default:
			t.Error("HealthChanged not signalled when the token became unusable")
		}
		inits := fx.f.Calls("Initialize")
		// Within the backoff nothing calls C_Initialize again, however many operations.
		for range 5 {
			requireUnavailable(t, fx.sign(t, fx.k2))
		}
		_, err := fx.tok.FindKey(context.Background(), "k1")
		requireUnavailable(t, err)
		assert.Equal(t, inits, fx.f.Calls("Initialize"), "C_Initialize calls within the backoff")

		fx.f.MoveBack(0)
		requireUnavailable(t, fx.sign(t, fx.k1)) // still within the backoff
		assert.Equal(t, inits, fx.f.Calls("Initialize"))

		changed = fx.tok.HealthChanged()
		fx.clock.Advance(time.Minute)
		fx.mustSign(t) // the same Token and Keys: no reopening
		assert.Equal(t, inits+1, fx.f.Calls("Initialize"), "one re-initialisation once the backoff passed")
		assert.NoError(t, fx.tok.Health())
		select {
		case <-changed:
		default:
			t.Error("HealthChanged not signalled when the token came back")
		}
		assert.NotEqual(t, slotBefore, fx.tok.Info().Slot, "the module renumbered the slot")
		assert.Equal(t, fx.f.SlotID(0), fx.tok.Info().Slot)
		assert.Equal(t, uint64(1), fx.tok.Stats().Reattaches.Load())
		assert.GreaterOrEqual(t, fx.tok.Stats().Recoveries.Load(), uint64(1))
		assert.True(t, fx.f.LoggedIn(0), "logged in again")
		assert.Equal(t, int64(fx.f.Sessions()), fx.tok.Stats().SessionsOpen.Load(), "sessions open")
	})

	t.Run("one token moved away: the module starts without it", func(t *testing.T) {
		fx := newGoneFixture(t, nil)
		fx.f.MoveAway(0)
		requireUnavailable(t, fx.sign(t, fx.k1))
		inits := fx.f.Calls("Initialize")
		requireUnavailable(t, fx.sign(t, fx.k1))
		assert.Equal(t, inits, fx.f.Calls("Initialize"), "no re-initialisation within the backoff")
		fx.f.MoveBack(0)
		fx.clock.Advance(time.Minute)
		fx.mustSign(t)
		assert.NoError(t, fx.tok.Health())
	})

	t.Run("library finalised elsewhere (CKR_CRYPTOKI_NOT_INITIALIZED)", func(t *testing.T) {
		fx := newGoneFixture(t, nil)
		require.NoError(t, fx.f.Finalize())
		fx.mustSign(t) // the first re-initialisation needs no wait
		assert.Equal(t, uint64(1), fx.tok.Stats().Reattaches.Load())
	})

	t.Run("library re-initialised elsewhere, slots and handles renumbered", func(t *testing.T) {
		fx := newGoneFixture(t, func(f *p11fake.Fake) { f.RenumberSlots = true })
		require.NoError(t, fx.f.Finalize())
		require.NoError(t, fx.f.Initialize())
		fx.mustSign(t)
		assert.Equal(t, fx.f.SlotID(0), fx.tok.Info().Slot)
		assert.Equal(t, uint64(1), fx.tok.Stats().Reattaches.Load())
	})

	t.Run("re-initialisation fails: bounded, then it works", func(t *testing.T) {
		fx := newGoneFixture(t, nil)
		require.NoError(t, fx.f.Finalize())
		fx.f.Fail("Initialize", pkcs11.Error(pkcs11.CKR_DEVICE_ERROR), pkcs11.Error(pkcs11.CKR_DEVICE_ERROR))
		requireUnavailable(t, fx.sign(t, fx.k1))
		assert.Equal(t, pkcs11.Error(pkcs11.CKR_DEVICE_ERROR), ckrOf(t, fx.sign(t, fx.k1)), "the module's answer stays in the chain, for the log")
		inits := fx.f.Calls("Initialize")
		fx.clock.Advance(time.Minute)
		requireUnavailable(t, fx.sign(t, fx.k1)) // the second injected failure
		assert.Equal(t, inits+1, fx.f.Calls("Initialize"))
		fx.clock.Advance(hsm.DefaultMinReinitBackoff) // less than the doubled backoff
		requireUnavailable(t, fx.sign(t, fx.k1))
		assert.Equal(t, inits+1, fx.f.Calls("Initialize"), "the backoff doubled")
		fx.clock.Advance(time.Minute)
		fx.mustSign(t)
	})

	t.Run("Check brings the token back with no operation", func(t *testing.T) {
		fx := newGoneFixture(t, func(f *p11fake.Fake) { f.AwayFailsInitialize = true })
		ctx := context.Background()
		require.NoError(t, fx.tok.Check(ctx))
		fx.f.MoveAway(0)
		requireUnavailable(t, fx.tok.Check(ctx))
		assert.Error(t, fx.tok.Health())
		fx.f.MoveBack(0)
		fx.clock.Advance(time.Minute)
		require.NoError(t, fx.tok.Check(ctx))
		assert.NoError(t, fx.tok.Health())
		inits := fx.f.Calls("Initialize")
		fx.mustSign(t)
		assert.Equal(t, inits, fx.f.Calls("Initialize"), "the operation finds the token as Check left it")
	})

	t.Run("a key deleted is not a token gone", func(t *testing.T) {
		fx := newGoneFixture(t, nil)
		require.NoError(t, fx.tok.DeleteKey(context.Background(), fx.k1))
		err := fx.sign(t, fx.k1)
		require.Error(t, err)
		assert.NotErrorIs(t, err, hsm.ErrTokenUnavailable)
		assert.NoError(t, fx.tok.Health())
		assert.Zero(t, fx.tok.Stats().Reattaches.Load())
		require.NoError(t, fx.sign(t, fx.k2))
	})
}

// TestTokenGoneWhileSigning moves the token away and back while goroutines sign: every
// operation either succeeds with the right key or fails with ErrTokenUnavailable, and
// signing works again afterwards.
func TestTokenGoneWhileSigning(t *testing.T) {
	fx := newGoneFixture(t, func(f *p11fake.Fake) { f.AwayFailsInitialize, f.RenumberSlots = true, true })
	digest := sha256.Sum256([]byte("gone"))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var other []error
	for i := range 4 {
		k := fx.k1
		if i%2 == 1 {
			k = fx.k2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pub := k.Public().(*ecdsa.PublicKey)
			for {
				select {
				case <-stop:
					return
				default:
				}
				sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
				if err == nil && !ecdsa.VerifyASN1(pub, digest[:], sig) {
					err = assert.AnError
				}
				if err != nil && !hsm.Unavailable(err) {
					mu.Lock()
					other = append(other, err)
					mu.Unlock()
				}
			}
		}()
	}
	for range 5 {
		fx.f.MoveAway(0)
		requireUnavailable(t, fx.tok.Check(context.Background()))
		fx.f.MoveBack(0)
		fx.clock.Advance(time.Hour)
		require.NoError(t, fx.tok.Check(context.Background()))
	}
	close(stop)
	wg.Wait()
	assert.Empty(t, other, "errors other than ErrTokenUnavailable")
	fx.mustSign(t)
	assert.Equal(t, int64(fx.f.Sessions()), fx.tok.Stats().SessionsOpen.Load(), "sessions open")
}
