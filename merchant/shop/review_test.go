package shop_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/merchant/shop"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
)

// TestShopRefusesOfferWithSpoofingDescription: an offer whose description holds a
// bidirectional override or a control character is refused when the shop starts,
// naming the offer, not at the first checkout (its initiation would not sign).
func TestShopRefusesOfferWithSpoofingDescription(t *testing.T) {
	f := newFixture(t)
	for _, desc := range []string{"The SET book \u202e00.001", "book\nfree gift"} {
		offers := append(systemtest.Offers(), merchant.Offer{ID: "spoof", Description: desc, Amount: 100, Currency: "EUR"})
		_, err := shop.New(shop.Config{Sign: f.bed.MerchantEnt.Sign, MACKey: f.bed.ChallengeKey, Store: f.bed.MerchantDB, MerchantID: "shop-1",
			Brands: []string{system.Brand}, Offers: offers, Endpoint: f.bed.MerchantAddr, ServerName: "127.0.0.1"})
		if assert.Error(t, err, "%q", desc) {
			assert.Contains(t, err.Error(), "offer spoof")
			assert.Contains(t, err.Error(), "order_description")
		}
	}
}
