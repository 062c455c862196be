// Package setproto is the SET purchase protocol on the wire: the message contents
// (setpb), their CMS content types, deterministic encoding, validation of every field
// received from a peer, signing and verification against the SET PKI, the dual
// signature, envelopes, and the SET error reasons carried in gRPC statuses.
//
// Every parser here takes untrusted bytes, bounds them, and returns an *Error with a
// Reason instead of panicking.
package setproto

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto/setpb"
)

// Limits on fields and messages.
const (
	MaxMessageSize     = 256 << 10 // bytes of any CMS blob or content
	MinChallengeLen    = 16
	MaxChallengeLen    = 64
	NonceLen           = 32
	MaxIDLen           = 64
	MaxDescriptionLen  = 1024
	MaxAmount          = 1_000_000_000_000 // minor units
	MaxKnownThumbprint = 16
)

// ContentType is the CMS content type of a message kind: Arc.2.<kind>.
func ContentType(k setpb.ContentKind) x509.OID { return cms.ProtocolContentType(uint64(k)) }

// Marshal encodes m deterministically: the bytes are what gets hashed and signed.
func Marshal(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("setproto: marshal %T: %w", m, err)
	}
	return b, nil
}

// Hash is SHA-256, the hash of H(OI), H(PI) and H(OD).
func Hash(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// NewID returns 128 random bits, base64url: XIDs, pair IDs, token IDs.
func NewID() (string, error) {
	b, err := Random(16)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Random returns n random bytes.
func Random(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("setproto: random: %w", err)
	}
	return b, nil
}

// NewChallenge returns a fresh 32-byte challenge.
func NewChallenge() ([]byte, error) { return Random(32) }

// decode unmarshals untrusted bytes into m and insists they are the canonical
// (deterministic) encoding with no unknown fields, so that what was hashed and
// signed is exactly what is read.
func decode(b []byte, m proto.Message) error {
	if len(b) == 0 {
		return Errorf(setpb.Reason_MALFORMED, "%s: empty", name(m))
	}
	if len(b) > MaxMessageSize {
		return Errorf(setpb.Reason_MALFORMED, "%s: %d bytes over the limit", name(m), len(b))
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return Wrap(setpb.Reason_MALFORMED, err, "%s", name(m))
	}
	if len(m.ProtoReflect().GetUnknown()) != 0 {
		return Errorf(setpb.Reason_MALFORMED, "%s: unknown fields", name(m))
	}
	again, err := Marshal(m)
	if err != nil || !bytes.Equal(again, b) {
		return Errorf(setpb.Reason_MALFORMED, "%s: not in canonical encoding", name(m))
	}
	return nil
}

func name(m proto.Message) string { return string(m.ProtoReflect().Descriptor().Name()) }

func malformed(m proto.Message, format string, args ...any) error {
	return Errorf(setpb.Reason_MALFORMED, "%s: %s", name(m), fmt.Sprintf(format, args...))
}

func checkID(what, v string) error {
	if v == "" || len(v) > MaxIDLen {
		return fmt.Errorf("%s must be 1..%d characters", what, MaxIDLen)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%s has a character outside [A-Za-z0-9._-]", what)
		}
	}
	return nil
}

func checkChallenge(what string, b []byte) error {
	if len(b) < MinChallengeLen || len(b) > MaxChallengeLen {
		return fmt.Errorf("%s must be %d..%d bytes", what, MinChallengeLen, MaxChallengeLen)
	}
	return nil
}

func checkHash(what string, b []byte) error {
	if len(b) != sha256.Size {
		return fmt.Errorf("%s must be %d bytes", what, sha256.Size)
	}
	return nil
}

func checkMoney(amount int64, currency string) error {
	if amount <= 0 || amount > MaxAmount {
		return fmt.Errorf("amount %d out of range 1..%d", amount, int64(MaxAmount))
	}
	if len(currency) != 3 {
		return fmt.Errorf("currency %q is not an ISO 4217 code", currency)
	}
	for i := 0; i < 3; i++ {
		if currency[i] < 'A' || currency[i] > 'Z' {
			return fmt.Errorf("currency %q is not an ISO 4217 code", currency)
		}
	}
	return nil
}

func checkText(what, s string, max int) error {
	if len(s) > max || !utf8.ValidString(s) {
		return fmt.Errorf("%s must be valid UTF-8 of at most %d bytes", what, max)
	}
	return nil
}

func first(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// ValidatePInitReq checks a purchase initiation request.
func ValidatePInitReq(m *setpb.PInitReq) error {
	if err := first(checkID("rrpid", m.GetRrpid()), checkID("brand", m.GetBrand()),
		checkText("language", m.GetLanguage(), 35), checkChallenge("chall_ec", m.GetChallEc()),
		checkID("offer_id", m.GetOfferId())); err != nil {
		return malformed(m, "%v", err)
	}
	if len(m.GetKnownThumbprints()) > MaxKnownThumbprint {
		return malformed(m, "more than %d known thumbprints", MaxKnownThumbprint)
	}
	for _, tp := range m.GetKnownThumbprints() {
		if err := checkHash("thumbprint", tp); err != nil {
			return malformed(m, "%v", err)
		}
	}
	return nil
}

// ParsePInitReq decodes and validates a PInitReq from its protobuf bytes.
func ParsePInitReq(b []byte) (*setpb.PInitReq, error) {
	m := &setpb.PInitReq{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	return m, ValidatePInitReq(m)
}

// ParsePInitRes decodes and validates the content of a PInitRes.
func ParsePInitRes(b []byte) (*setpb.PInitRes, error) {
	m := &setpb.PInitRes{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if err := first(checkID("xid", m.GetXid()), checkID("rrpid", m.GetRrpid()),
		checkChallenge("chall_ec", m.GetChallEc()), checkChallenge("chall_m", m.GetChallM()),
		pki.ValidateEntityID(m.GetMerchantId()), checkID("brand", m.GetBrand()),
		pki.ValidateEntityID(m.GetGatewayId()), checkHash("gateway_kx_thumbprint", m.GetGatewayKxThumbprint()),
		checkText("order_description", m.GetOrderDescription(), MaxDescriptionLen),
		checkMoney(m.GetAmount(), m.GetCurrency())); err != nil {
		return nil, malformed(m, "%v", err)
	}
	return m, nil
}

// ParseOrderInfo decodes and validates an OI.
func ParseOrderInfo(b []byte) (*setpb.OrderInfo, error) {
	m := &setpb.OrderInfo{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if err := first(checkID("xid", m.GetXid()), checkID("rrpid", m.GetRrpid()),
		checkChallenge("chall_ec", m.GetChallEc()), checkChallenge("chall_m", m.GetChallM()),
		pki.ValidateEntityID(m.GetMerchantId()), checkID("brand", m.GetBrand()),
		checkHash("od_hash", m.GetOdHash()), checkMoney(m.GetAmount(), m.GetCurrency()),
		checkHash("nonce", m.GetNonce()), gatewayField(m.GetGatewayId()),
		checkHash("gateway_kx_thumbprint", m.GetGatewayKxThumbprint()), checkID("offer_id", m.GetOfferId())); err != nil {
		return nil, malformed(m, "%v", err)
	}
	return m, nil
}

// gatewayField checks a gateway id field of an OI or PI.
func gatewayField(id string) error {
	if err := pki.ValidateEntityID(id); err != nil {
		return fmt.Errorf("gateway_id: %w", err)
	}
	return nil
}

// ParsePaymentInstructions decodes and validates a PI. Errors never echo card data.
func ParsePaymentInstructions(b []byte) (*setpb.PaymentInstructions, error) {
	m := &setpb.PaymentInstructions{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if err := first(checkID("xid", m.GetXid()), checkID("rrpid", m.GetRrpid()),
		pki.ValidateEntityID(m.GetMerchantId()), pki.ValidatePAN(m.GetPan()), pki.ValidateExpiry(m.GetExpiry()),
		checkHash("pan_secret", m.GetPanSecret()), checkMoney(m.GetAmount(), m.GetCurrency()),
		checkHash("oi_hash", m.GetOiHash()), checkHash("nonce", m.GetNonce()), gatewayField(m.GetGatewayId()),
		checkHash("gateway_kx_thumbprint", m.GetGatewayKxThumbprint())); err != nil {
		return nil, malformed(m, "%v", err)
	}
	return m, nil
}

// ValidatePurchaseRequest checks the shape of a purchase request; the contents are
// checked by their own parsers.
func ValidatePurchaseRequest(m *setpb.PurchaseRequest) error {
	switch {
	case len(m.GetOrderInfo()) == 0 || len(m.GetOrderInfo()) > MaxMessageSize:
		return malformed(m, "order_info missing or too large")
	case len(m.GetPiHash()) != sha256.Size:
		return malformed(m, "pi_hash must be %d bytes", sha256.Size)
	case len(m.GetPiEnvelope()) == 0 || len(m.GetPiEnvelope()) > MaxMessageSize:
		return malformed(m, "pi_envelope missing or too large")
	case len(m.GetDualSignature()) == 0 || len(m.GetDualSignature()) > MaxMessageSize:
		return malformed(m, "dual_signature missing or too large")
	}
	return nil
}

// ParsePurchaseRequest decodes and validates a PurchaseRequest from protobuf bytes.
func ParsePurchaseRequest(b []byte) (*setpb.PurchaseRequest, error) {
	m := &setpb.PurchaseRequest{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	return m, ValidatePurchaseRequest(m)
}

// ParsePurchaseResponse decodes and validates a purchase response content.
func ParsePurchaseResponse(b []byte) (*setpb.PurchaseResponse, error) {
	m := &setpb.PurchaseResponse{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if err := first(checkID("xid", m.GetXid()), checkID("rrpid", m.GetRrpid()),
		checkChallenge("chall_ec", m.GetChallEc()), checkResult(m.GetResult()),
		checkText("auth_code", m.GetAuthCode(), 16), checkMoneyOrZero(m.GetAmount(), m.GetCurrency())); err != nil {
		return nil, malformed(m, "%v", err)
	}
	return m, nil
}

func checkResult(r setpb.AuthResult) error {
	if _, ok := setpb.AuthResult_name[int32(r)]; !ok || r == setpb.AuthResult_AUTH_RESULT_UNSPECIFIED {
		return fmt.Errorf("result %d unknown", r)
	}
	return nil
}

func checkMoneyOrZero(amount int64, currency string) error {
	if amount == 0 {
		return checkMoney(1, currency)
	}
	return checkMoney(amount, currency)
}

// ParseAuthRequest decodes and validates an authorization request content.
func ParseAuthRequest(b []byte) (*setpb.AuthRequest, error) {
	m := &setpb.AuthRequest{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if err := first(checkID("xid", m.GetXid()), checkID("rrpid", m.GetRrpid()),
		checkChallenge("chall_m", m.GetChallM()), pki.ValidateEntityID(m.GetMerchantId()),
		checkMoney(m.GetAmount(), m.GetCurrency()), checkHash("oi_hash", m.GetOiHash()),
		checkHash("merchant_kx_thumbprint", m.GetMerchantKxThumbprint())); err != nil {
		return nil, malformed(m, "%v", err)
	}
	if len(m.GetPiEnvelope()) == 0 || len(m.GetDualSignature()) == 0 {
		return nil, malformed(m, "pi_envelope and dual_signature are required")
	}
	return m, nil
}

// ParseAuthResponse decodes and validates an authorization response content.
func ParseAuthResponse(b []byte) (*setpb.AuthResponse, error) {
	m := &setpb.AuthResponse{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if err := first(checkID("xid", m.GetXid()), checkID("rrpid", m.GetRrpid()),
		checkChallenge("chall_m", m.GetChallM()), pki.ValidateEntityID(m.GetMerchantId()),
		checkResult(m.GetResult()), checkText("auth_code", m.GetAuthCode(), 16),
		checkMoneyOrZero(m.GetAuthorizedAmount(), m.GetCurrency()), checkText("pan_mask", m.GetPanMask(), 19)); err != nil {
		return nil, malformed(m, "%v", err)
	}
	if len(m.GetCaptureToken()) > MaxMessageSize {
		return nil, malformed(m, "capture token too large")
	}
	return m, nil
}

// ParseCaptureToken decodes and validates a capture token content.
func ParseCaptureToken(b []byte) (*setpb.CaptureToken, error) {
	m := &setpb.CaptureToken{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if err := first(checkID("token_id", m.GetTokenId()), checkID("xid", m.GetXid()),
		pki.ValidateEntityID(m.GetMerchantId()), checkMoney(m.GetAmount(), m.GetCurrency()),
		checkText("auth_code", m.GetAuthCode(), 16)); err != nil {
		return nil, malformed(m, "%v", err)
	}
	return m, nil
}

// ParseInquiryRequest decodes and validates an inquiry request content.
func ParseInquiryRequest(b []byte) (*setpb.InquiryRequest, error) {
	m := &setpb.InquiryRequest{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if err := first(checkID("xid", m.GetXid()), checkID("rrpid", m.GetRrpid()),
		checkChallenge("chall_ec", m.GetChallEc())); err != nil {
		return nil, malformed(m, "%v", err)
	}
	return m, nil
}

// ParseInquiryResponse decodes and validates an inquiry response content.
func ParseInquiryResponse(b []byte) (*setpb.InquiryResponse, error) {
	m := &setpb.InquiryResponse{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if err := first(checkID("xid", m.GetXid()), checkID("rrpid", m.GetRrpid()),
		checkChallenge("chall_ec", m.GetChallEc()), checkID("state", m.GetState()),
		checkMoney(m.GetAmount(), m.GetCurrency())); err != nil {
		return nil, malformed(m, "%v", err)
	}
	return m, nil
}

// ParseStoredAnswer decodes a merchant's stored answer.
func ParseStoredAnswer(b []byte) (*setpb.StoredAnswer, error) {
	m := &setpb.StoredAnswer{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if (len(m.GetPurchaseResponse()) == 0) == (m.GetError() == nil) {
		return nil, malformed(m, "exactly one of purchase_response and error")
	}
	return m, nil
}

// DualContent is what the cardholder signs: H(PI) || H(OI).
func DualContent(piHash, oiHash []byte) []byte {
	out := make([]byte, 0, 2*sha256.Size)
	return append(append(out, piHash...), oiHash...)
}

// SplitDualContent splits a dual signature's content into H(PI) and H(OI).
func SplitDualContent(b []byte) (piHash, oiHash []byte, err error) {
	if len(b) != 2*sha256.Size {
		return nil, nil, Errorf(setpb.Reason_MALFORMED, "dual signature content must be %d bytes", 2*sha256.Size)
	}
	return b[:sha256.Size], b[sha256.Size:], nil
}
