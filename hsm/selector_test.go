package hsm_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

// TestOpenTokenByLabelSerialOrSlot: a token is found by its label, its serial number
// or its slot ID, each alone; two at once, none, or one that matches nothing is an
// error saying so.
func TestOpenTokenByLabelSerialOrSlot(t *testing.T) {
	ctx := context.Background()
	mod := softhsmtest.Module(t)
	label := softhsmtest.NewLabel(t)
	softhsmtest.InitToken(t, label)
	info, err := mod.Find(hsm.Selector{Label: label})
	require.NoError(t, err)
	require.NotEmpty(t, info.Serial, "the module gives its tokens serial numbers")
	slot := info.Slot
	other := info.Slot + 1000003
	// Some modules give every token the same serial (tpm2-pkcs11: 0000000000000000);
	// there a serial selects nothing unambiguously and must say so.
	all, err := mod.Tokens()
	require.NoError(t, err)
	sharing := 0
	for _, ti := range all {
		if ti.Initialized && ti.Serial == info.Serial {
			sharing++
		}
	}
	require.Positive(t, sharing)

	for _, tc := range []struct {
		name string
		sel  hsm.Selector
	}{
		{"label", hsm.Selector{Label: label}},
		{"serial", hsm.Selector{Serial: info.Serial}},
		{"slot", hsm.Selector{Slot: &slot}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: tc.sel, PIN: hsm.PINSource("env:" + softhsmtest.PINEnv), Logger: quiet()})
			if tc.sel.Serial != "" && sharing > 1 {
				require.ErrorIs(t, err, hsm.ErrBadRequest, "%d tokens share serial %s", sharing, info.Serial)
				assert.Contains(t, err.Error(), "tokens match")
				return
			}
			require.NoError(t, err)
			defer tok.Close()
			assert.Equal(t, label, tok.Label())
		})
	}
	for _, tc := range []struct {
		name string
		sel  hsm.Selector
		want error
	}{
		{"label and serial", hsm.Selector{Label: label, Serial: info.Serial}, hsm.ErrBadRequest},
		{"serial and slot", hsm.Selector{Serial: info.Serial, Slot: &slot}, hsm.ErrBadRequest},
		{"nothing", hsm.Selector{}, hsm.ErrBadRequest},
		{"unknown serial", hsm.Selector{Serial: "no-such-serial!"}, hsm.ErrTokenNotFound},
		{"unknown slot", hsm.Selector{Slot: &other}, hsm.ErrTokenNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: tc.sel, PIN: hsm.PINSource("env:" + softhsmtest.PINEnv), Logger: quiet()})
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.want)
		})
	}
}
