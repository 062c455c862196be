package merchant_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/merchant"
)

// TestOperationCheck: an operator request an operation cannot send is refused before
// anything is signed, naming the field.
func TestOperationCheck(t *testing.T) {
	for _, tc := range []struct {
		name  string
		op    merchant.Operation
		r     merchant.OperatorRequest
		field string // "" for accepted
	}{
		{"capture defaults to the order's amount", merchant.OpCapture, merchant.OperatorRequest{XID: "x"}, ""},
		{"no xid", merchant.OpCapture, merchant.OperatorRequest{}, "xid"},
		{"bad xid", merchant.OpCapture, merchant.OperatorRequest{XID: "a b"}, "xid"},
		{"credit needs an amount", merchant.OpCredit, merchant.OperatorRequest{XID: "x"}, "amount"},
		{"negative amount", merchant.OpReverseAuth, merchant.OperatorRequest{XID: "x", Amount: -1}, "amount"},
		{"reverse-auth all", merchant.OpReverseAuth, merchant.OperatorRequest{XID: "x"}, ""},
		{"reverse-auth takes no batch", merchant.OpReverseAuth, merchant.OperatorRequest{XID: "x", BatchID: "b"}, "batch"},
		{"bad batch", merchant.OpCapture, merchant.OperatorRequest{XID: "x", BatchID: "b;b"}, "batch"},
		{"reverse-capture needs its target", merchant.OpReverseCapture, merchant.OperatorRequest{XID: "x", Amount: 1}, "target"},
		{"capture undoes nothing", merchant.OpCapture, merchant.OperatorRequest{XID: "x", TargetID: "t"}, "target"},
		{"bad request id", merchant.OpCredit, merchant.OperatorRequest{XID: "x", Amount: 1, RequestID: "amount=1;batch="}, "request_id"},
		{"reverse-credit", merchant.OpReverseCredit, merchant.OperatorRequest{XID: "x", Amount: 1, TargetID: "t", BatchID: "b"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op.Check(tc.r)
			if tc.field == "" {
				assert.NoError(t, err)
				return
			}
			var ie *merchant.InputError
			require.True(t, errors.As(err, &ie), "%v", err)
			assert.Equal(t, tc.field, ie.Field)
		})
	}
}

func TestParseAmount(t *testing.T) {
	for in, want := range map[string]string{"4990": "", " 12 ": "", "49.90": "(4990 for 49.90)", "0": "must be positive",
		"-3": "must be positive", "x": "want an integer", "99999999999999999999": "want an integer"} {
		n, err := merchant.ParseAmount(in, false)
		if want == "" {
			assert.NoError(t, err, in)
			assert.Positive(t, n)
			continue
		}
		assert.ErrorContains(t, err, want, in)
	}
	n, err := merchant.ParseAmount("0", true)
	assert.NoError(t, err)
	assert.Zero(t, n)
	_, ok := merchant.OperationByName("reverse-credit")
	assert.True(t, ok)
	_, ok = merchant.OperationByName("refund")
	assert.False(t, ok)
}
