package setproto

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto/setpb"
)

// Error is a protocol refusal with its SET reason. Messages never contain card data.
type Error struct {
	Reason setpb.Reason
	Msg    string
	Err    error // cause, may be nil
}

func (e *Error) Error() string {
	s := "set: " + e.Reason.String()
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with reason r.
func Errorf(r setpb.Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with reason r around err, keeping a reason err already has
// only when r is REASON_UNSPECIFIED.
func Wrap(r setpb.Reason, err error, format string, args ...any) *Error {
	if r == setpb.Reason_REASON_UNSPECIFIED {
		r = ReasonOf(err)
	}
	return &Error{Reason: r, Msg: fmt.Sprintf(format, args...), Err: err}
}

// unavailable is implemented by errors meaning a resource of the service itself is
// unusable for now and the same request may be retried: hsm.ErrTokenUnavailable (the
// key token went away and is being found again). It is an interface so that setproto
// need not import hsm.
type unavailable interface{ Unavailable() bool }

// serviceUnavailable reports whether err, anywhere in its chain, says the service's
// own key token is unusable for now.
func serviceUnavailable(err error) bool {
	var u unavailable
	return errors.As(err, &u) && u.Unavailable()
}

// unavailableMsg is all a peer learns about an unusable token: which key, which token
// and the module's CKR code are for the service's log only.
const unavailableMsg = "the service's key token is unavailable; retry the same request later"

// ReasonOf returns the SET reason carried by err: GATEWAY_UNAVAILABLE when the
// service's key token is unusable for now (whatever reason the failed step would have
// given: the request was not judged), else an *Error's, a gRPC status detail's, or
// INTERNAL.
func ReasonOf(err error) setpb.Reason {
	if err == nil {
		return setpb.Reason_REASON_UNSPECIFIED
	}
	if serviceUnavailable(err) {
		return setpb.Reason_GATEWAY_UNAVAILABLE
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if s, ok := status.FromError(err); ok {
		for _, d := range s.Details() {
			if ed, ok := d.(*setpb.ErrorDetail); ok {
				return ed.GetReason()
			}
		}
		if s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded {
			return setpb.Reason_GATEWAY_UNAVAILABLE
		}
	}
	return setpb.Reason_INTERNAL
}

// certReason maps a certificate verification failure to a SET reason.
func certReason(err error) setpb.Reason {
	switch pki.ReasonOf(err) {
	case pki.ReasonRevoked:
		return setpb.Reason_CERT_REVOKED
	case pki.ReasonExpired, pki.ReasonNotYetValid:
		return setpb.Reason_CERT_EXPIRED
	case pki.ReasonWrongRole, pki.ReasonWrongKeyUsage, pki.ReasonPathLength:
		return setpb.Reason_CERT_WRONG_ROLE
	case pki.ReasonPANMismatch:
		return setpb.Reason_PAN_MISMATCH
	case pki.ReasonMalformed:
		return setpb.Reason_MALFORMED
	case pki.ReasonUnsupportedKey:
		return setpb.Reason_UNSUPPORTED
	}
	return setpb.Reason_CERT_UNTRUSTED
}

// codeOf is the gRPC code a reason travels with.
func codeOf(r setpb.Reason) codes.Code {
	switch r {
	case setpb.Reason_MALFORMED, setpb.Reason_UNSUPPORTED:
		return codes.InvalidArgument
	case setpb.Reason_BAD_SIGNATURE, setpb.Reason_CERT_UNTRUSTED, setpb.Reason_CERT_REVOKED,
		setpb.Reason_CERT_EXPIRED, setpb.Reason_CERT_WRONG_ROLE:
		return codes.Unauthenticated
	case setpb.Reason_CERT_UNKNOWN:
		return codes.FailedPrecondition
	case setpb.Reason_UNKNOWN_TRANSACTION:
		return codes.NotFound
	case setpb.Reason_REPLAY:
		return codes.AlreadyExists
	case setpb.Reason_GATEWAY_UNAVAILABLE:
		return codes.Unavailable
	case setpb.Reason_INTERNAL, setpb.Reason_REASON_UNSPECIFIED:
		return codes.Internal
	case setpb.Reason_AMOUNT_EXCEEDED:
		return codes.OutOfRange
	case setpb.Reason_INVALID_STATE, setpb.Reason_AUTH_EXPIRED:
		return codes.FailedPrecondition
	}
	// the request is well formed but inconsistent: challenge, XID, amount, merchant,
	// hash, PAN, capture token, decryption
	return codes.PermissionDenied
}

// Status converts err into a gRPC status error carrying an ErrorDetail. Context
// cancellation keeps its own code. Internal errors are not described to the peer.
func Status(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, "canceled")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	d := DetailOf(err)
	st := status.New(codeOf(d.GetReason()), d.GetReason().String()+": "+d.GetMessage())
	if sd, e := st.WithDetails(d); e == nil {
		st = sd
	}
	return st.Err()
}

// DetailOf is the ErrorDetail describing err to a peer: the reason and, except for
// internal errors, the message.
func DetailOf(err error) *setpb.ErrorDetail {
	r := ReasonOf(err)
	if serviceUnavailable(err) {
		return &setpb.ErrorDetail{Reason: r, Message: unavailableMsg}
	}
	msg := "internal error"
	var e *Error
	if r != setpb.Reason_INTERNAL {
		msg = err.Error()
		if errors.As(err, &e) {
			msg = e.Msg
			if e.Err != nil {
				msg += ": " + e.Err.Error()
			}
		}
	}
	return &setpb.ErrorDetail{Reason: r, Message: msg}
}

// FromDetail turns a stored or received ErrorDetail back into an error.
func FromDetail(d *setpb.ErrorDetail) error {
	return &Error{Reason: d.GetReason(), Msg: d.GetMessage()}
}
