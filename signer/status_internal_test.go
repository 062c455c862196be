package signer

import (
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/hsm"
)

// TestStatusOfAnUnavailableToken (issue 11 item 8): a token that is gone for now is a
// retryable UNAVAILABLE whose message names no key and no CKR code.
func TestStatusOfAnUnavailableToken(t *testing.T) {
	err := &hsm.Error{Op: "sign with CKM_ECDSA", Key: "pkcs11:token=signer;object=k;type=private",
		Err: fmt.Errorf("%w: %w", hsm.ErrTokenUnavailable, pkcs11.Error(pkcs11.CKR_OBJECT_HANDLE_INVALID))}
	st := status.Convert(statusOf(fmt.Errorf("sign: %w", err)))
	assert.Equal(t, codes.Unavailable, st.Code())
	assert.NotContains(t, st.Message(), "pkcs11:")
	assert.NotContains(t, st.Message(), "CKR_")
	assert.Contains(t, st.Message(), "retry")
}
