// Package reason is the one shape of setpay's classified errors: a package declares
// its Reason codes (an integer type that is itself an error, so errors.Is(err,
// ReasonRevoked) works) and uses Error[Reason] as its error type.
package reason

import (
	"errors"
	"fmt"
)

// Code is a package's reason type: an integer with a name, usable as an error
// whose text carries the package prefix ("pki: revoked").
type Code interface {
	~int
	comparable
	error
	fmt.Stringer
}

// Error is a refusal with a reason, the subject it concerns (a certificate subject,
// never card data) and the cause. Its text never contains a PAN or a secret: callers
// put neither in Subject or Err.
type Error[R Code] struct {
	Reason  R
	Subject string
	Err     error
}

func (e *Error[R]) Error() string {
	s := e.Reason.Error()
	if e.Subject != "" {
		s += " (" + e.Subject + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error[R]) Unwrap() error { return e.Err }

// Is matches a reason target, or an *Error target with the same reason and no cause.
func (e *Error[R]) Is(target error) bool {
	switch t := target.(type) {
	case R:
		return t == e.Reason
	case *Error[R]:
		return t.Reason == e.Reason && t.Err == nil
	}
	return false
}

// Of returns the reason carried by err (an *Error[R] or a bare R in its chain), or
// unknown if none.
func Of[R Code](err error, unknown R) R {
	var e *Error[R]
	if errors.As(err, &e) {
		return e.Reason
	}
	var r R
	if errors.As(err, &r) {
		return r
	}
	return unknown
}
