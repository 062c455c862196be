package store

import (
	"context"
	"fmt"
	"time"
)

func (o *Order) validate() error {
	if err := checkID("XID", o.XID); err != nil {
		return err
	}
	if err := checkID("merchant order ID", o.MerchantOrderID); err != nil {
		return err
	}
	if len(o.DescriptionHash) == 0 || len(o.DescriptionHash) > 64 {
		return invalidf("description hash must be 1..64 bytes")
	}
	if err := checkMoney("order", o.Amount, o.Currency, false); err != nil {
		return err
	}
	if err := checkID("order state", string(o.State)); err != nil {
		return err
	}
	if o.CreatedAt.IsZero() {
		return invalidf("order time must be set")
	}
	if len(o.Cardholder) > 64 {
		return invalidf("cardholder thumbprint must be at most 64 bytes")
	}
	return nil
}

func (t *txn) InsertOrder(ctx context.Context, o *Order) error {
	if err := o.validate(); err != nil {
		return fmt.Errorf("store: insert order: %w", err)
	}
	if o.UpdatedAt.IsZero() {
		o.UpdatedAt = o.CreatedAt
	}
	return t.atomic(ctx, func() error {
		if _, err := t.exec(ctx, `INSERT INTO orders
			(xid, merchant_order_id, description_hash, amount, currency, state, created_at, updated_at, cardholder)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			o.XID, o.MerchantOrderID, o.DescriptionHash, o.Amount, o.Currency, string(o.State),
			micros(o.CreatedAt), micros(o.UpdatedAt), nullBytes(o.Cardholder)); err != nil {
			return t.writeErr(err, "insert order %s", o.XID)
		}
		return nil
	})
}

// orderColumns are the columns every order query reads, in scanOrder's order.
const orderColumns = `xid, merchant_order_id, description_hash, amount, currency, state,
		created_at, updated_at, capture_token, cardholder`

// scanOrder reads one row of orderColumns.
func scanOrder(row interface{ Scan(...any) error }) (Order, error) {
	var o Order
	var state string
	var created, updated int64
	if err := row.Scan(&o.XID, &o.MerchantOrderID, &o.DescriptionHash, &o.Amount, &o.Currency, &state,
		&created, &updated, &o.CaptureToken, &o.Cardholder); err != nil {
		return Order{}, err
	}
	o.State, o.CreatedAt, o.UpdatedAt = OrderState(state), fromMicros(created), fromMicros(updated)
	return o, nil
}

// listOrders runs a query of orderColumns; what names it in errors.
func (t *txn) listOrders(ctx context.Context, what, q string, args ...any) ([]Order, error) {
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	defer rows.Close()
	var out []Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, fmt.Errorf("store: %s: %w", what, err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	return out, nil
}

func (t *txn) getOrder(ctx context.Context, col, v string) (*Order, error) {
	o, err := scanOrder(t.queryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE `+col+` = ?`, v))
	if err != nil {
		return nil, notFound(err, "get order %s=%s", col, v)
	}
	return &o, nil
}

func (t *txn) GetOrder(ctx context.Context, xid string) (*Order, error) {
	return t.getOrder(ctx, "xid", xid)
}

func (t *txn) GetOrderByMerchantOrderID(ctx context.Context, merchantOrderID string) (*Order, error) {
	return t.getOrder(ctx, "merchant_order_id", merchantOrderID)
}

func (t *txn) ListOrders(ctx context.Context, state OrderState, limit int) ([]Order, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("store: list orders: %w", invalidf("limit must be positive"))
	}
	q := `SELECT ` + orderColumns + ` FROM orders`
	args := []any{}
	if state != "" {
		q += ` WHERE state = ?`
		args = append(args, string(state))
	}
	q += ` ORDER BY created_at DESC, xid LIMIT ?`
	return t.listOrders(ctx, "list orders", q, append(args, limit)...)
}

func (t *txn) SetOrderState(ctx context.Context, xid string, from, to OrderState, at time.Time) error {
	if err := checkID("order state", string(to)); err != nil {
		return fmt.Errorf("store: set order state: %w", err)
	}
	return t.atomic(ctx, func() error {
		res, err := t.exec(ctx, `UPDATE orders SET state = ?, updated_at = ? WHERE xid = ? AND state = ?`,
			string(to), micros(at), xid, string(from))
		if err != nil {
			return fmt.Errorf("store: set order %s state: %w", xid, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: set order %s state: %w", xid, err)
		} else if n == 0 {
			o, err := t.GetOrder(ctx, xid)
			if err != nil {
				return err
			}
			return fmt.Errorf("store: set order %s state %s -> %s: state is %s: %w", xid, from, to, o.State, ErrConflict)
		}
		return nil
	})
}

func (t *txn) SetOrderCaptureToken(ctx context.Context, xid string, token []byte) error {
	if len(token) == 0 {
		return fmt.Errorf("store: set order %s capture token: %w", xid, invalidf("empty token"))
	}
	return t.atomic(ctx, func() error {
		res, err := t.exec(ctx, `UPDATE orders SET capture_token = ? WHERE xid = ?`, token, xid)
		if err != nil {
			return fmt.Errorf("store: set order %s capture token: %w", xid, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: set order %s capture token: %w", xid, err)
		} else if n == 0 {
			return fmt.Errorf("store: set order %s capture token: %w", xid, ErrNotFound)
		}
		return nil
	})
}

// nullBytes stores an empty byte slice as NULL.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}
