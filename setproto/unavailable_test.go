package setproto_test

import (
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
)

// TestStatusOfAnUnavailableToken (issue 11 item 8): a step that failed because the
// service's token is gone reads, to the peer, as a retryable UNAVAILABLE with the SET
// reason GATEWAY_UNAVAILABLE, whatever reason the step would have given, and the
// status names no key URI and no CKR code (those go to the service's log).
func TestStatusOfAnUnavailableToken(t *testing.T) {
	tokenErr := &hsm.Error{Op: "decrypt with CKM_RSA_PKCS_OAEP", Key: "pkcs11:token=gw;object=gateway-kx;type=private",
		Err: fmt.Errorf("%w: %w", hsm.ErrTokenUnavailable, pkcs11.Error(pkcs11.CKR_OBJECT_HANDLE_INVALID))}
	cases := map[string]error{
		"bare":                  tokenErr,
		"wrapped with a reason": setproto.Wrap(setpb.Reason_DECRYPT_FAILED, tokenErr, "open the authorization request"),
		"wrapped by fmt":        fmt.Errorf("sign the response: %w", tokenErr),
	}
	for name, err := range cases {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, setpb.Reason_GATEWAY_UNAVAILABLE, setproto.ReasonOf(err))
			st, ok := status.FromError(setproto.Status(err))
			require.True(t, ok)
			assert.Equal(t, codes.Unavailable, st.Code())
			require.Len(t, st.Details(), 1)
			d, ok := st.Details()[0].(*setpb.ErrorDetail)
			require.True(t, ok)
			assert.Equal(t, setpb.Reason_GATEWAY_UNAVAILABLE, d.GetReason())
			for _, text := range []string{st.Message(), d.GetMessage()} {
				assert.NotContains(t, text, "pkcs11:")
				assert.NotContains(t, text, "CKR_")
				assert.Contains(t, text, "retry")
			}
		})
	}
	// Other token errors keep their reasons.
	other := setproto.Wrap(setpb.Reason_DECRYPT_FAILED, &hsm.Error{Op: "decrypt", Err: pkcs11.Error(pkcs11.CKR_ENCRYPTED_DATA_INVALID)}, "open")
	assert.Equal(t, setpb.Reason_DECRYPT_FAILED, setproto.ReasonOf(other))
}
