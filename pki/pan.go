package pki

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// PAN errors. They never contain card digits.
var (
	ErrPANNotDigits = errors.New("pki: PAN must contain only digits")
	ErrPANLength    = errors.New("pki: PAN must have 12 to 19 digits")
	ErrPANLuhn      = errors.New("pki: PAN fails the Luhn check")
	ErrExpiryFormat = errors.New("pki: card expiry must be YYYYMM with month 01-12")
)

// Minimum lengths of the secrets in the PAN binding: both are random values,
// and the wallet secret is what makes the cardholder ID unguessable.
const (
	MinWalletSecretLen = 16
	MinCANonceLen      = 16
	PANSecretLen       = sha256.Size
)

// Domain separation labels; changing them changes every derived value.
const (
	panSecretLabel    = "setpay/pan-secret/v1\x00"
	cardholderIDLabel = "setpay/cardholder-id/v1\x00"
)

// ValidatePAN checks a primary account number: digits only, 12..19 long, valid
// Luhn check digit. Errors never echo the PAN.
func ValidatePAN(pan string) error {
	for i := 0; i < len(pan); i++ {
		if pan[i] < '0' || pan[i] > '9' {
			return ErrPANNotDigits
		}
	}
	if len(pan) < 12 || len(pan) > 19 {
		return fmt.Errorf("%w (got %d)", ErrPANLength, len(pan))
	}
	sum := 0
	for i := 0; i < len(pan); i++ {
		d := int(pan[len(pan)-1-i] - '0')
		if i%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	if sum%10 != 0 {
		return ErrPANLuhn
	}
	return nil
}

// ValidateExpiry checks a card expiry in the canonical form YYYYMM.
func ValidateExpiry(expiry string) error {
	if len(expiry) != 6 {
		return ErrExpiryFormat
	}
	for i := 0; i < 6; i++ {
		if expiry[i] < '0' || expiry[i] > '9' {
			return ErrExpiryFormat
		}
	}
	if m := expiry[4:]; m < "01" || m > "12" {
		return ErrExpiryFormat
	}
	return nil
}

// MaskPAN returns the PAN with all but the first 6 and last 4 digits replaced
// by '*'. Anything that is not a well-formed PAN length is masked entirely, so
// the result is always safe to log.
func MaskPAN(pan string) string {
	if len(pan) < 12 || len(pan) > 19 {
		return strings.Repeat("*", min(len(pan), 19))
	}
	return pan[:6] + strings.Repeat("*", len(pan)-10) + pan[len(pan)-4:]
}

// PANSecret derives the per-certificate secret of the PAN binding from the
// wallet's random secret and the CA's nonce:
//
//	PANSecret = HMAC-SHA256(key = walletSecret, "setpay/pan-secret/v1\0" || caNonce)
//
// Both sides contribute randomness: neither the wallet nor the CA alone picks
// the value that ends up hashed into the certificate.
func PANSecret(walletSecret, caNonce []byte) ([]byte, error) {
	if len(walletSecret) < MinWalletSecretLen {
		return nil, fmt.Errorf("pki: wallet secret of %d bytes, need at least %d", len(walletSecret), MinWalletSecretLen)
	}
	if len(caNonce) < MinCANonceLen {
		return nil, fmt.Errorf("pki: CA nonce of %d bytes, need at least %d", len(caNonce), MinCANonceLen)
	}
	m := hmac.New(sha256.New, walletSecret)
	m.Write([]byte(panSecretLabel))
	m.Write(caNonce)
	return m.Sum(nil), nil
}

// CardholderID is the one-way value put in a cardholder certificate instead of
// the card number:
//
//	CardholderID = base64url(HMAC-SHA256(key = panSecret, "setpay/cardholder-id/v1\0" || pan || 0x00 || expiry))
//
// Without panSecret (256 bits, never in the certificate) the small PAN space
// cannot be searched; with it, the gateway recomputes the ID from the PI.
func CardholderID(pan, expiry string, panSecret []byte) (string, error) {
	if err := ValidatePAN(pan); err != nil {
		return "", err
	}
	if err := ValidateExpiry(expiry); err != nil {
		return "", err
	}
	if len(panSecret) != PANSecretLen {
		return "", fmt.Errorf("pki: PAN secret of %d bytes, want %d", len(panSecret), PANSecretLen)
	}
	m := hmac.New(sha256.New, panSecret)
	m.Write([]byte(cardholderIDLabel))
	m.Write([]byte(pan))
	m.Write([]byte{0})
	m.Write([]byte(expiry))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)), nil
}

// ValidateCardholderID checks the shape of a CardholderID (43 base64url characters).
func ValidateCardholderID(id string) error {
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(b) != sha256.Size {
		return fmt.Errorf("pki: cardholder id is not a base64url SHA-256 value")
	}
	return nil
}

// CheckCardholderPAN verifies that card data received in a PI matches a
// cardholder certificate. It fails with ReasonPANMismatch, never revealing the PAN.
func CheckCardholderPAN(cert *x509.Certificate, pan, expiry string, panSecret []byte) error {
	r, id, err := EntityID(cert)
	if err != nil {
		return err
	}
	if r != RoleCardholder {
		return newError(ReasonWrongRole, cert, fmt.Errorf("%s certificate carries no card binding", r))
	}
	want, err := CardholderID(pan, expiry, panSecret)
	if err != nil {
		return &Error{Reason: ReasonPANMismatch, Err: err}
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(id)) != 1 {
		return &Error{Reason: ReasonPANMismatch, Subject: cert.Subject.String(), Err: fmt.Errorf("card %s does not match certificate", MaskPAN(pan))}
	}
	return nil
}
