package reason_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/setpay/setpay/internal/reason"
)

type code int

const (
	unknown code = iota
	revoked
	expired
)

func (c code) String() string { return [...]string{"unknown", "revoked", "expired"}[c] }
func (c code) Error() string  { return "test: " + c.String() }

type Error = reason.Error[code]

func TestShape(t *testing.T) {
	cause := errors.New("serial 7 on CRL 3")
	tests := []struct {
		name     string
		err      error
		text     string
		is       []error
		isNot    []error
		reasonOf code
	}{
		{"bare reason", revoked, "test: revoked", []error{revoked}, []error{expired}, revoked},
		{"with cause", &Error{Reason: revoked, Err: cause}, "test: revoked: serial 7 on CRL 3",
			[]error{revoked, cause, &Error{Reason: revoked}}, []error{expired, &Error{Reason: expired}}, revoked},
		{"with subject", &Error{Reason: expired, Subject: "CN=shop"}, "test: expired (CN=shop)",
			[]error{expired}, []error{revoked}, expired},
		{"wrapped", fmt.Errorf("verify: %w", &Error{Reason: expired, Err: cause}), "verify: test: expired: serial 7 on CRL 3",
			[]error{expired, cause}, []error{revoked}, expired},
		{"foreign error", errors.New("other"), "other", nil, []error{revoked}, unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.text, tt.err.Error())
			for _, target := range tt.is {
				assert.ErrorIs(t, tt.err, target)
			}
			for _, target := range tt.isNot {
				assert.NotErrorIs(t, tt.err, target)
			}
			assert.Equal(t, tt.reasonOf, reason.Of(tt.err, unknown))
		})
	}
}
