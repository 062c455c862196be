package hsm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// Sentinel errors; every error from this package wraps one of these or a pkcs11.Error,
// so callers can branch with errors.Is without parsing text.
var (
	ErrModule        = errors.New("PKCS#11 module unusable")
	ErrTokenNotFound = errors.New("token not found")
	ErrPINIncorrect  = errors.New("PIN incorrect")
	ErrPINSource     = errors.New("PIN source unusable")
	ErrKeyNotFound   = errors.New("key not found")
	ErrKeyExists     = errors.New("key already exists")
	ErrWrongUsage    = errors.New("key not permitted for this operation")
	ErrUnsupported   = errors.New("not supported by this token")
	ErrBadRequest    = errors.New("invalid request")
	ErrClosed        = errors.New("token closed")
	// ErrTokenUnavailable: the token is (for now) unusable — gone from its slot, the
	// module not initialised, its keys invisible — and recovery has not brought it back
	// yet. It is retryable: the Token tries again, spaced by a backoff, and on its own
	// when a health check asks (Token.Check). It has an Unavailable method, so packages
	// that must not import hsm (setproto) can recognise it.
	ErrTokenUnavailable error = unavailableError{}
)

type unavailableError struct{}

func (unavailableError) Error() string { return "token unavailable" }

// Unavailable marks the error as a temporary unavailability of the service's key token.
func (unavailableError) Unavailable() bool { return true }

// Error carries what failed, on which token and key, and the CKR code when the module
// gave one. It never carries a PIN.
type Error struct {
	Op    string // e.g. "sign", "decrypt", "login"
	Token string // token label
	Key   string // RFC 7512 URI of the key, when one is involved
	Err   error
}

func (e *Error) Error() string {
	where := e.Token
	if e.Key != "" {
		where = e.Key
	}
	if where == "" {
		return fmt.Sprintf("hsm: %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("hsm: %s (%s): %v", e.Op, where, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// CKR returns the PKCS#11 return value inside err, if any.
func CKR(err error) (pkcs11.Error, bool) {
	var p pkcs11.Error
	if errors.As(err, &p) {
		return p, true
	}
	return 0, false
}

// ckrName names a CKR code the way the standard does, for errors and metrics.
func ckrName(err error) string {
	if c, ok := CKR(err); ok {
		// pkcs11.Error's text is "pkcs11: 0xNN: CKR_NAME"; the name is what people search for.
		msg := c.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 && strings.HasPrefix(msg[i+2:], "CKR_") {
			return msg[i+2:]
		}
		return fmt.Sprintf("CKR_0x%08X", uint(c))
	}
	return ""
}

// CKRName returns the standard name of the CKR code inside err ("" when there is none).
func CKRName(err error) string { return ckrName(err) }

// recoverable reports errors after which reopening sessions and logging in again may
// succeed: the session or the login state was lost. (A token that went away is
// tokenGone: it must be found again first.)
func recoverable(err error) bool {
	c, ok := CKR(err)
	if !ok {
		return false
	}
	switch c {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_USER_NOT_LOGGED_IN:
		return true
	}
	return false
}

// staleHandle reports errors meaning a cached object handle no longer names the key:
// the token says so, or the handle is from before a re-initialisation of the module.
func staleHandle(err error) bool {
	if errors.Is(err, errStaleEpoch) {
		return true
	}
	c, ok := CKR(err)
	return ok && (c == pkcs11.CKR_KEY_HANDLE_INVALID || c == pkcs11.CKR_OBJECT_HANDLE_INVALID)
}

// errStaleEpoch: an object handle found before the module was re-initialised; the
// number may now name another object, so it is never used.
var errStaleEpoch = errors.New("object handle from before the module was re-initialised")

// tokenGone reports answers meaning the token or the library itself went away: the
// token is absent or broken, its slot no longer exists, or the library was finalised.
// Reopening sessions does not help; finding the token again (after a
// re-initialisation, when it is not in the module's slot list) may.
func tokenGone(err error) bool {
	c, ok := CKR(err)
	if !ok {
		return false
	}
	switch c {
	case pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_TOKEN_NOT_RECOGNIZED:
		return true
	}
	return false
}

// Unavailable reports whether err means the token is temporarily unusable (see
// ErrTokenUnavailable).
func Unavailable(err error) bool { return errors.Is(err, ErrTokenUnavailable) }
