package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

// TestTokenDirectoryMovedAwayAndBack is issue 11 item 8 on real SoftHSM: the token
// directory moved away and back under a running Token. While it is away, operations
// fail with ErrTokenUnavailable (SoftHSM 2.6.1 answers CKR_OBJECT_HANDLE_INVALID,
// finds nothing and answers C_GetTokenInfo with CKR_GENERAL_ERROR, and C_Initialize
// fails with CKR_GENERAL_ERROR); once it is back, the same Token and Key sign again
// without being reopened: the module was re-initialised, the token found by its serial
// in its new slot, and the key by CKA_ID (docs/hsm.md, "A token that goes away").
func TestTokenDirectoryMovedAwayAndBack(t *testing.T) {
	dir := softhsmtest.Dir(t) // skips on modules without a SoftHSM directory
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	hsm.SetReinitBackoff(tok.Module(), 0, 0) // every check may try again: no waiting here
	t.Cleanup(func() {
		hsm.SetReinitBackoff(tok.Module(), hsm.DefaultMinReinitBackoff, hsm.DefaultMaxReinitBackoff)
	})
	k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "moved", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	digest := sha256.Sum256([]byte("moved away and back"))
	sign := func() error {
		sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err == nil {
			assert.True(t, ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig))
		}
		return err
	}
	require.NoError(t, sign())
	require.NoError(t, tok.Check(ctx))

	away := dir.TokensPath() + ".away"
	require.NoError(t, os.Rename(dir.TokensPath(), away))
	moved := true
	t.Cleanup(func() {
		if moved {
			_ = os.Rename(away, dir.TokensPath())
		}
	})

	for range 3 {
		err := sign()
		require.Error(t, err)
		assert.ErrorIs(t, err, hsm.ErrTokenUnavailable, "%v", err)
		assert.NotErrorIs(t, err, hsm.ErrKeyNotFound)
	}
	err = tok.Check(ctx)
	assert.ErrorIs(t, err, hsm.ErrTokenUnavailable)
	assert.ErrorIs(t, tok.Health(), hsm.ErrTokenUnavailable)

	require.NoError(t, os.Rename(away, dir.TokensPath()))
	moved = false
	require.NoError(t, tok.Check(ctx), "the token is found again")
	assert.NoError(t, tok.Health())
	require.NoError(t, sign(), "the same Key signs again")
	require.NoError(t, sign())
	assert.Positive(t, tok.Stats().Recoveries.Load(), "recoveries")
	assert.Positive(t, tok.Stats().Reattaches.Load(), "reattaches")
	k2, err := tok.FindKey(ctx, "moved")
	require.NoError(t, err)
	assert.Equal(t, k.ID(), k2.ID())
}
