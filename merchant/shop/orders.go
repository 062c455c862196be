package shop

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/store"
)

// How a cart becomes something the merchant's SET purchase accepts: checkout
// records the cart as a shop order under a fresh reference ("o-" + 128 random bits)
// and that reference is an offer of its own: offer ID = order reference, amount =
// the cart's total, description = the cart's lines, sale = every line is a sale.
// The merchant asks the Book for offer IDs not in its configuration, so the
// wallet's PInitReq names the reference and the PInitRes the merchant signs states
// exactly the cart; the merchant records each purchase as merchant order ID
// "<ref>/<XID>", which is how the order page finds its state.
//
// Shop orders are written once, in the merchant's store (its idempotency table,
// scope "shop/order"), so they survive a restart and are shared by replicas of the
// merchant on one database; no schema change is needed.

const (
	orderScope  = "shop/order"
	orderPrefix = "o-"
	// orderGrace is how long after its initiation expired an order is still
	// offered: a purchase initiated just before expiry completes (the merchant's
	// initiation validity).
	orderGrace = merchant.DefaultInitValidity
)

// orderHash is the constant request hash every shop order is written under: the
// reference alone identifies it, and a second write of one reference is refused.
var orderHash = func() []byte { h := sha256.Sum256([]byte("setpay shop order v1")); return h[:] }()

// errNoOrder aborts a lookup's write: the reference was not recorded.
var errNoOrder = errors.New("shop: no such order")

// Line is one cart line of an order.
type Line struct {
	OfferID     string `json:"offer"`
	Description string `json:"description"`
	Quantity    int    `json:"quantity"`
	UnitAmount  int64  `json:"unit_amount"`
}

// Order is a checked-out cart.
type Order struct {
	Ref         string    `json:"ref"`
	Lines       []Line    `json:"lines"`
	Amount      int64     `json:"amount"`
	Currency    string    `json:"currency"`
	Description string    `json:"description"`
	Sale        bool      `json:"sale"`
	CreatedAt   time.Time `json:"created_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	Initiation  []byte    `json:"initiation"` // the signed .setpay file
}

// Book is the merchant.OfferBook of shop orders, over the merchant's store.
type Book struct {
	DB    store.DB
	Clock func() time.Time // nil: time.Now
}

var _ merchant.OfferBook = (*Book)(nil)

func (b *Book) now() time.Time {
	if b.Clock != nil {
		return b.Clock()
	}
	return time.Now()
}

// Offer implements merchant.OfferBook: the order under reference id, while it is
// offered (until its initiation's expiry plus the merchant's initiation validity).
func (b *Book) Offer(ctx context.Context, id string) (merchant.Offer, bool, error) {
	o, err := b.Get(ctx, id)
	if errors.Is(err, errNoOrder) {
		return merchant.Offer{}, false, nil
	}
	if err != nil {
		return merchant.Offer{}, false, err
	}
	if !b.now().Before(o.ExpiresAt.Add(orderGrace)) {
		return merchant.Offer{}, false, nil
	}
	return merchant.Offer{ID: o.Ref, Description: o.Description, Amount: o.Amount, Currency: o.Currency, Sale: o.Sale}, true, nil
}

// Get reads the order under ref: errNoOrder when there is none.
func (b *Book) Get(ctx context.Context, ref string) (*Order, error) {
	if !validRef(ref) {
		return nil, errNoOrder
	}
	raw, replayed, err := b.DB.Idempotent(ctx, orderScope, ref, orderHash, func(context.Context, store.Tx) ([]byte, error) {
		return nil, errNoOrder // not recorded: write nothing
	})
	if err != nil {
		if errors.Is(err, errNoOrder) {
			return nil, errNoOrder
		}
		return nil, fmt.Errorf("shop: read order: %w", err)
	}
	if !replayed {
		return nil, errNoOrder
	}
	var o Order
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("shop: order %s: %w", ref, err)
	}
	return &o, nil
}

// put records a new order; a reference used before is an error.
func (b *Book) put(ctx context.Context, o *Order) error {
	raw, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("shop: encode order: %w", err)
	}
	_, replayed, err := b.DB.Idempotent(ctx, orderScope, o.Ref, orderHash, func(context.Context, store.Tx) ([]byte, error) {
		return raw, nil
	})
	if err != nil {
		return fmt.Errorf("shop: record order: %w", err)
	}
	if replayed {
		return fmt.Errorf("shop: order reference %s used twice", o.Ref)
	}
	return nil
}

// purchases lists the merchant's orders (one per purchase attempt) of ref, newest first.
func (b *Book) purchases(ctx context.Context, ref string) ([]store.Order, error) {
	var out []store.Order
	err := b.DB.View(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		out, err = tx.ListOrdersOfOffer(ctx, ref, 20)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("shop: order state: %w", err)
	}
	return out, nil
}

func newRef() (string, error) {
	id, err := setproto.NewID()
	if err != nil {
		return "", err
	}
	return orderPrefix + id, nil
}

// validRef: "o-" and 22 base64url characters.
func validRef(ref string) bool {
	rest, ok := strings.CutPrefix(ref, orderPrefix)
	if !ok || len(rest) != 22 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
