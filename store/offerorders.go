package store

import (
	"context"
	"fmt"
)

// ListOrdersOfOffer lists up to limit orders whose merchant order ID is
// offerID + "/" + XID (what the merchant records for a purchase of an offer),
// newest first: the storefront finds the purchases of one of its orders by it.
func (t *txn) ListOrdersOfOffer(ctx context.Context, offerID string, limit int) ([]Order, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("store: list orders of offer: %w", invalidf("limit must be positive"))
	}
	if err := checkID("offer ID", offerID); err != nil {
		return nil, fmt.Errorf("store: list orders of offer: %w", err)
	}
	// A range on the unique index instead of LIKE (no escaping): '0' follows '/'.
	return t.listOrders(ctx, "list orders of offer", `SELECT `+orderColumns+` FROM orders
		WHERE merchant_order_id >= ? AND merchant_order_id < ? ORDER BY created_at DESC, xid LIMIT ?`,
		offerID+"/", offerID+"0", limit)
}
