package setproto_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
)

// TestPaymentInitiationRefusesDisplaySpoofingDescription: the order description is
// merchant-controlled text the wallet shows on its confirmation page; control
// characters and bidirectional overrides (which make "1 x book" read as something
// else) are refused as MALFORMED, naming the field. Plain text of any script passes.
func TestPaymentInitiationRefusesDisplaySpoofingDescription(t *testing.T) {
	valid := func(desc string) *setpb.PaymentInitiation {
		return &setpb.PaymentInitiation{Version: setproto.InitiationVersion, MerchantEndpoint: "127.0.0.1:7443", TlsServerName: "127.0.0.1",
			MerchantId: "shop-1", Brands: []string{"SETPay"}, Amount: 2500, Currency: "EUR", OrderDescription: desc,
			OfferId: "book", OrderRef: "ord-1", IssuedUnix: 1_700_000_000, ExpiresUnix: 1_700_001_800}
	}
	for _, ok := range []string{"1 x The SET book, hardcover", "2 x Café crème; 1 x 書籍", "كتاب", ""} {
		assert.NoError(t, setproto.ValidatePaymentInitiation(valid(ok)), "%q", ok)
		assert.NoError(t, setproto.ValidateOrderDescription(ok), "%q", ok)
	}
	for name, bad := range map[string]string{
		"right-to-left override":  "1 x book \u202e00.001 RUE",
		"left-to-right embedding": "1 x \u202abook",
		"isolate":                 "1 x \u2067book\u2069",
		"right-to-left mark":      "book\u200f",
		"arabic letter mark":      "book\u061c",
		"newline":                 "1 x book\n2 x free gift",
		"escape":                  "book\x1b[2J",
		"NUL":                     "book\x00",
		"C1 control":              "book\u0085",
	} {
		err := setproto.ValidatePaymentInitiation(valid(bad))
		if assert.Error(t, err, name) {
			assert.Equal(t, setpb.Reason_MALFORMED, setproto.ReasonOf(err), name)
			assert.Contains(t, err.Error(), "order_description", name)
		}
	}
}
