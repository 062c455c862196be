package setproto

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto/setpb"
)

// The SET payment initiation: what a merchant's storefront hands the cardholder's
// wallet at checkout (SET's wake-up message). It is a DER SignedData of content type
// PAYMENT_INITIATION over a PaymentInitiation, signed by the merchant's SET signature
// key with the merchant's certificate chain embedded.
const (
	// InitiationMIMEType is the media type of a .setpay file.
	InitiationMIMEType = "application/set-payment-initiation"
	// InitiationExt is the file extension of a payment initiation.
	InitiationExt = ".setpay"
	// InitiationVersion is the one version this code writes and reads.
	InitiationVersion = 1
	// MaxInitiationLifetime bounds expires-at minus issued-at.
	MaxInitiationLifetime = 24 * time.Hour
	// InitiationClockSkew is how far in the future issued-at may be.
	InitiationClockSkew = 5 * time.Minute
	// MaxInitiationBrands bounds the brand list.
	MaxInitiationBrands = 8
	// maxHostLen bounds the endpoint and the TLS server name.
	maxHostLen = 253
)

// Initiation is the content of a payment initiation.
type Initiation struct {
	Version     int      // InitiationVersion; 0 in SignInitiation means InitiationVersion
	Endpoint    string   // the merchant's SET gRPC address, host:port
	ServerName  string   // the name in the merchant's TLS server certificate
	MerchantID  string   // the merchant id (the signer certificate's)
	Brands      []string // accepted card brands, at least one
	Amount      int64    // minor units
	Currency    string   // ISO 4217
	Description string   // the order description
	OfferID     string   // what the wallet's PInitReq names
	OrderRef    string   // the storefront's order reference
	IssuedAt    time.Time
	ExpiresAt   time.Time
}

// VerifiedInitiation is an initiation whose signature and signer chain verified.
type VerifiedInitiation struct {
	Initiation
	// Merchant is the signer's certificate; Chain its verified chain, leaf first,
	// root last (issuing MCA, brand, root).
	Merchant *x509.Certificate
	Chain    []*x509.Certificate
}

func (in Initiation) proto() *setpb.PaymentInitiation {
	return &setpb.PaymentInitiation{
		Version: uint32(in.Version), MerchantEndpoint: in.Endpoint, TlsServerName: in.ServerName,
		MerchantId: in.MerchantID, Brands: in.Brands, Amount: in.Amount, Currency: in.Currency,
		OrderDescription: in.Description, OfferId: in.OfferID, OrderRef: in.OrderRef,
		IssuedUnix: in.IssuedAt.Unix(), ExpiresUnix: in.ExpiresAt.Unix(),
	}
}

func initiationOf(m *setpb.PaymentInitiation) Initiation {
	return Initiation{
		Version: int(m.GetVersion()), Endpoint: m.GetMerchantEndpoint(), ServerName: m.GetTlsServerName(),
		MerchantID: m.GetMerchantId(), Brands: m.GetBrands(), Amount: m.GetAmount(), Currency: m.GetCurrency(),
		Description: m.GetOrderDescription(), OfferID: m.GetOfferId(), OrderRef: m.GetOrderRef(),
		IssuedAt: time.Unix(m.GetIssuedUnix(), 0).UTC(), ExpiresAt: time.Unix(m.GetExpiresUnix(), 0).UTC(),
	}
}

// ValidatePaymentInitiation checks every field of an initiation (not its times
// against a clock: VerifyInitiation does that).
func ValidatePaymentInitiation(m *setpb.PaymentInitiation) error {
	if m.GetVersion() != InitiationVersion {
		return Errorf(setpb.Reason_UNSUPPORTED, "PaymentInitiation: version %d (this wallet reads version %d)", m.GetVersion(), InitiationVersion)
	}
	if err := first(checkEndpoint(m.GetMerchantEndpoint()), checkServerName("tls_server_name", m.GetTlsServerName()),
		pki.ValidateEntityID(m.GetMerchantId()), checkMoney(m.GetAmount(), m.GetCurrency()),
		ValidateOrderDescription(m.GetOrderDescription()),
		checkID("offer_id", m.GetOfferId()), checkID("order_ref", m.GetOrderRef())); err != nil {
		return malformed(m, "%v", err)
	}
	if n := len(m.GetBrands()); n == 0 || n > MaxInitiationBrands {
		return malformed(m, "brands: %d brands, want 1..%d", n, MaxInitiationBrands)
	}
	for _, b := range m.GetBrands() {
		if err := checkID("brand", b); err != nil {
			return malformed(m, "%v", err)
		}
	}
	issued, expires := m.GetIssuedUnix(), m.GetExpiresUnix()
	if issued <= 0 || expires <= issued {
		return malformed(m, "expires_unix must be after issued_unix, both positive")
	}
	if time.Duration(expires-issued)*time.Second > MaxInitiationLifetime {
		return malformed(m, "lifetime over %s", MaxInitiationLifetime)
	}
	return nil
}

// ParsePaymentInitiation decodes and validates the content of a payment initiation.
func ParsePaymentInitiation(b []byte) (*setpb.PaymentInitiation, error) {
	m := &setpb.PaymentInitiation{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	return m, ValidatePaymentInitiation(m)
}

// SignInitiation validates in and signs it with the merchant's signature key,
// embedding the merchant's certificate chain; the result is the .setpay file.
// in.MerchantID must be the id in signer's certificate. ctx is for the token.
func SignInitiation(ctx context.Context, signer Party, in Initiation) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if in.Version == 0 {
		in.Version = InitiationVersion
	}
	if signer.Cert == nil || signer.Key == nil {
		return nil, Errorf(setpb.Reason_INTERNAL, "sign initiation: no merchant signature key")
	}
	role, id, err := pki.EntityID(signer.Cert)
	if err != nil || role != pki.RoleMerchant {
		return nil, Errorf(setpb.Reason_CERT_WRONG_ROLE, "sign initiation: the signer certificate is not a merchant's")
	}
	if id != in.MerchantID {
		return nil, Errorf(setpb.Reason_MERCHANT_MISMATCH, "sign initiation: merchant_id %q is not the signer's %q", in.MerchantID, id)
	}
	m := in.proto()
	if err := ValidatePaymentInitiation(m); err != nil {
		return nil, err
	}
	return SignMessage(setpb.ContentKind_PAYMENT_INITIATION, m, signer, in.IssuedAt, signer.Certificates())
}

// VerifyInitiation parses an untrusted .setpay file, verifies its signature and the
// signer's merchant signature chain with trust at now, checks that the content names
// the signer's merchant id and that now is within issued-at (less
// InitiationClockSkew) and expires-at. Refusals are *Error with reasons MALFORMED
// (not an initiation, a field out of range), UNSUPPORTED (another version),
// BAD_SIGNATURE (tampered), CERT_UNTRUSTED, CERT_REVOKED, CERT_EXPIRED,
// CERT_WRONG_ROLE (not a merchant's signature certificate), MERCHANT_MISMATCH (the
// content names another merchant) and INITIATION_EXPIRED.
func VerifyInitiation(ctx context.Context, data []byte, trust *Trust, now time.Time) (*VerifiedInitiation, error) {
	if trust == nil || trust.Verifier == nil {
		return nil, Errorf(setpb.Reason_INTERNAL, "verify initiation: no trust")
	}
	at := *trust
	at.Clock = func() time.Time { return now }
	v, err := at.Open(ctx, data, nil, setpb.ContentKind_PAYMENT_INITIATION, pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature})
	if err != nil {
		return nil, err
	}
	m, err := ParsePaymentInitiation(v.Content)
	if err != nil {
		return nil, err
	}
	if m.GetMerchantId() != v.EntityID {
		return nil, Errorf(setpb.Reason_MERCHANT_MISMATCH, "the initiation names merchant %q but is signed by %q", m.GetMerchantId(), v.EntityID)
	}
	in := initiationOf(m)
	if now.Before(in.IssuedAt.Add(-InitiationClockSkew)) {
		return nil, Errorf(setpb.Reason_INITIATION_EXPIRED, "the initiation is issued at %s, in the future", in.IssuedAt.Format(time.RFC3339))
	}
	if !now.Before(in.ExpiresAt) {
		return nil, Errorf(setpb.Reason_INITIATION_EXPIRED, "the initiation expired at %s", in.ExpiresAt.Format(time.RFC3339))
	}
	return &VerifiedInitiation{Initiation: in, Merchant: v.Signer, Chain: v.Chain}, nil
}

// InitiationLink is the link a storefront offers for the local wallet:
// walletURL/receive?initiation=<base64url of the file>.
func InitiationLink(walletURL string, file []byte) string {
	return strings.TrimRight(walletURL, "/") + "/receive?initiation=" + url.QueryEscape(base64.RawURLEncoding.EncodeToString(file))
}

// DecodeInitiationParam decodes the initiation query parameter of such a link
// (base64url, padded or not) into the file bytes, bounded like every message.
func DecodeInitiationParam(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if s == "" {
		return nil, Errorf(setpb.Reason_MALFORMED, "initiation: empty")
	}
	if base64.RawURLEncoding.DecodedLen(len(s)) > MaxMessageSize {
		return nil, Errorf(setpb.Reason_MALFORMED, "initiation: over the limit")
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, Wrap(setpb.Reason_MALFORMED, err, "initiation: not base64url")
	}
	return b, nil
}

// ValidateOrderDescription checks an initiation's order description, which the
// wallet shows the cardholder as the merchant wrote it: valid UTF-8 of at most
// MaxDescriptionLen bytes with no control characters (C0, DEL, C1) and no
// bidirectional formatting characters (embeddings, overrides, isolates, marks),
// which could make the confirmation page read differently than what is signed.
func ValidateOrderDescription(s string) error {
	if err := checkText("order_description", s, MaxDescriptionLen); err != nil {
		return err
	}
	for i, r := range s {
		if unicode.IsControl(r) || bidiControl(r) {
			return fmt.Errorf("order_description: character %U at byte %d is a control or bidirectional formatting character", r, i)
		}
	}
	return nil
}

func bidiControl(r rune) bool {
	return r == '\u061c' || r == '\u200e' || r == '\u200f' || r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069'
}

func checkEndpoint(ep string) error {
	if len(ep) == 0 || len(ep) > maxHostLen+6 {
		return fmt.Errorf("merchant_endpoint must be host:port of at most %d characters", maxHostLen+6)
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("merchant_endpoint is not host:port")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != port {
		return fmt.Errorf("merchant_endpoint port must be 1..65535")
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	return checkServerName("merchant_endpoint host", host)
}

// checkServerName accepts DNS names (letters, digits, hyphens, dots) and IP addresses.
func checkServerName(what, s string) error {
	if s == "" || len(s) > maxHostLen {
		return fmt.Errorf("%s must be 1..%d characters", what, maxHostLen)
	}
	if net.ParseIP(s) != nil {
		return nil
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%s is not a host name", what)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%s is not a host name", what)
			}
		}
	}
	return nil
}
