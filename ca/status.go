package ca

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/pki"
)

type ioReader = io.Reader

// ErrorDomain is the ErrorInfo domain of the CA service's refusals.
const ErrorDomain = "setpay.ca.v1"

const (
	codeInvalid            = codes.InvalidArgument
	codePermission         = codes.PermissionDenied
	codeFailedPrecondition = codes.FailedPrecondition
	codeNotFound           = codes.NotFound
	codeAlreadyExists      = codes.AlreadyExists
	codeUnavailable        = codes.Unavailable
)

// refuse builds a gRPC status whose message starts with the SET-style reason
// and whose details carry it as an errdetails.ErrorInfo.
func refuse(code codes.Code, reason, format string, args ...any) error {
	st := status.New(code, reason+": "+fmt.Sprintf(format, args...))
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

// RefusalReason extracts the reason of a refusal from a gRPC error ("" if none).
func RefusalReason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Domain == ErrorDomain {
			return ei.Reason
		}
	}
	return ""
}

var caReasons = map[Reason]struct {
	code codes.Code
	name string
}{
	ReasonBadRequest:           {codes.InvalidArgument, "BAD_REQUEST"},
	ReasonBadCSR:               {codes.InvalidArgument, "BAD_CSR"},
	ReasonBadProofOfPossession: {codes.PermissionDenied, "BAD_PROOF_OF_POSSESSION"},
	ReasonKeyNotAllowed:        {codes.InvalidArgument, "KEY_NOT_ALLOWED"},
	ReasonRoleNotAllowed:       {codes.PermissionDenied, "ROLE_NOT_ALLOWED"},
	ReasonEnrollmentInvalid:    {codes.PermissionDenied, "ENROLLMENT_INVALID"},
	ReasonEnrollmentUsed:       {codes.AlreadyExists, "ENROLLMENT_USED"},
	ReasonEnrollmentExpired:    {codes.FailedPrecondition, "ENROLLMENT_EXPIRED"},
	ReasonUnknownSerial:        {codes.NotFound, "UNKNOWN_SERIAL"},
	ReasonAlreadyRevoked:       {codes.AlreadyExists, "ALREADY_REVOKED"},
	ReasonIssuerExpired:        {codes.FailedPrecondition, "ISSUER_EXPIRED"},
	ReasonKeyCertified:         {codes.AlreadyExists, "KEY_ALREADY_CERTIFIED"},
}

// caStatus maps an Authority error to a status; anything without a reason is
// logged and answered as Internal without detail.
func (s *Server) caStatus(ctx context.Context, op string, err error) error {
	if m, ok := caReasons[ReasonOf(err)]; ok {
		s.log.InfoContext(ctx, "CA request refused", "op", op, "result", m.name, "err", err)
		return refuse(m.code, m.name, "%v", err)
	}
	return s.internal(ctx, op, err)
}

func (s *Server) internal(ctx context.Context, op string, err error) error {
	s.log.ErrorContext(ctx, "CA request failed", "op", op, "err", err)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, "INTERNAL: the CA could not complete the request")
}

// pkiStatus maps a certificate verification failure.
func pkiStatus(err error) error {
	r := pki.ReasonOf(err)
	code := codes.PermissionDenied
	if r == pki.ReasonMalformed {
		code = codes.InvalidArgument
	}
	return refuse(code, "CERTIFICATE_"+upperSnake(r.String()), "%v", err)
}

func upperSnake(s string) string {
	b := []byte(s)
	out := make([]byte, 0, len(b)+4)
	for i, c := range b {
		switch {
		case c == '-' || c == ' ':
			out = append(out, '_')
		case c >= 'a' && c <= 'z':
			out = append(out, c-32)
		case c >= 'A' && c <= 'Z':
			if i > 0 && b[i-1] >= 'a' && b[i-1] <= 'z' {
				out = append(out, '_')
			}
			out = append(out, c)
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

// ServerTLSConfig is the registration service's TLS: TLS 1.3 with server
// authentication only, since registering clients have no certificate yet
// (requests that need one carry it in a CMS signature instead).
func ServerTLSConfig(id tlsrpc.Identity) *tls.Config {
	c := tlsrpc.ServerTLS(id, nil)
	c.ClientAuth = tls.NoClientCert
	c.ClientCAs = nil
	return c
}
