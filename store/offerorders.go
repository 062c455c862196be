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
	rows, err := t.query(ctx, `SELECT xid, merchant_order_id, description_hash, amount, currency, state,
		created_at, updated_at, capture_token, cardholder FROM orders
		WHERE merchant_order_id >= ? AND merchant_order_id < ? ORDER BY created_at DESC, xid LIMIT ?`,
		offerID+"/", offerID+"0", limit)
	if err != nil {
		return nil, fmt.Errorf("store: list orders of offer: %w", err)
	}
	defer rows.Close()
	var out []Order
	for rows.Next() {
		var o Order
		var st string
		var created, updated int64
		if err := rows.Scan(&o.XID, &o.MerchantOrderID, &o.DescriptionHash, &o.Amount, &o.Currency, &st,
			&created, &updated, &o.CaptureToken, &o.Cardholder); err != nil {
			return nil, fmt.Errorf("store: list orders of offer: %w", err)
		}
		o.State, o.CreatedAt, o.UpdatedAt = OrderState(st), fromMicros(created), fromMicros(updated)
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list orders of offer: %w", err)
	}
	return out, nil
}
