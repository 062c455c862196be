package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

const authColumns = `merchant_id, xid, amount, currency, authorized_amount, captured_total, credited_total,
	status, decline_reason, auth_code, pan_hash, pan_hash_key, pan_mask, card_expiry, capture_token_id, created_at, expires_at`

func (t *txn) InsertAuthorization(ctx context.Context, a *Authorization) error {
	if err := a.validate(); err != nil {
		return fmt.Errorf("store: insert authorization: %w", err)
	}
	return t.atomic(ctx, func() error {
		_, err := t.exec(ctx, `INSERT INTO authorizations (`+authColumns+`)
			VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.MerchantID, a.XID, a.Amount, a.Currency, a.AuthorizedAmount,
			string(a.Status), a.DeclineReason, a.AuthCode, a.PANHash, a.PANHashKey, a.PANMask, a.CardExpiry,
			a.CaptureTokenID, micros(a.CreatedAt), micros(a.ExpiresAt))
		if err != nil {
			return t.writeErr(err, "insert authorization %s/%s", a.MerchantID, a.XID)
		}
		return nil
	})
}

func (t *txn) GetAuthorization(ctx context.Context, merchantID, xid string) (*Authorization, error) {
	var a Authorization
	var status string
	var created, expires int64
	err := t.queryRow(ctx, `SELECT `+authColumns+` FROM authorizations WHERE merchant_id = ? AND xid = ?`,
		merchantID, xid).Scan(&a.MerchantID, &a.XID, &a.Amount, &a.Currency, &a.AuthorizedAmount,
		&a.CapturedTotal, &a.CreditedTotal, &status, &a.DeclineReason, &a.AuthCode, &a.PANHash, &a.PANHashKey, &a.PANMask,
		&a.CardExpiry, &a.CaptureTokenID, &created, &expires)
	if err != nil {
		return nil, notFound(err, "get authorization %s/%s", merchantID, xid)
	}
	a.Status = AuthStatus(status)
	a.CreatedAt, a.ExpiresAt = fromMicros(created), fromMicros(expires)
	return &a, nil
}

func (t *txn) SetAuthorizationStatus(ctx context.Context, merchantID, xid string, from, to AuthStatus) error {
	if !from.valid() || !to.valid() {
		return invalidf("authorization status %q -> %q", from, to)
	}
	return t.atomic(ctx, func() error {
		res, err := t.exec(ctx, `UPDATE authorizations SET status = ? WHERE merchant_id = ? AND xid = ? AND status = ?`,
			string(to), merchantID, xid, string(from))
		if err != nil {
			return fmt.Errorf("store: set authorization %s/%s status: %w", merchantID, xid, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: set authorization %s/%s status: %w", merchantID, xid, err)
		} else if n == 0 {
			a, err := t.GetAuthorization(ctx, merchantID, xid)
			if err != nil {
				return err
			}
			return fmt.Errorf("store: set authorization %s/%s status %s -> %s: status is %s: %w",
				merchantID, xid, from, to, a.Status, ErrConflict)
		}
		return nil
	})
}

func (t *txn) ReverseAuthorization(ctx context.Context, merchantID, xid string, amount int64) (*Authorization, error) {
	if amount <= 0 {
		return nil, invalidf("reverse amount %d must be positive", amount)
	}
	var out *Authorization
	err := t.atomic(ctx, func() error {
		res, err := t.exec(ctx, `UPDATE authorizations SET
				authorized_amount = authorized_amount - ?,
				status = CASE WHEN authorized_amount - ? = 0 THEN 'reversed'
				              WHEN captured_total > 0 AND captured_total = authorized_amount - ? THEN 'captured'
				              ELSE status END
			WHERE merchant_id = ? AND xid = ? AND status IN ('authorized', 'partially_captured')
			  AND authorized_amount - ? >= captured_total`,
			amount, amount, amount, merchantID, xid, amount)
		if err != nil {
			return fmt.Errorf("store: reverse authorization %s/%s: %w", merchantID, xid, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("store: reverse authorization %s/%s: %w", merchantID, xid, err)
		}
		a, err := t.GetAuthorization(ctx, merchantID, xid)
		if err != nil {
			return err
		}
		if n == 0 {
			if a.Status != AuthAuthorized && a.Status != AuthPartiallyCaptured {
				return fmt.Errorf("store: reverse authorization %s/%s: status is %s: %w", merchantID, xid, a.Status, ErrConflict)
			}
			return fmt.Errorf("store: reverse authorization %s/%s: %d would leave less than captured %d: %w",
				merchantID, xid, amount, a.CapturedTotal, ErrLimitExceeded)
		}
		out = a
		return nil
	})
	return out, err
}

// explainRefusal says why a conditional capture/credit update matched no row.
func (t *txn) explainRefusal(ctx context.Context, what, merchantID, xid, currency string, amount int64, at time.Time) error {
	a, err := t.GetAuthorization(ctx, merchantID, xid)
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	switch {
	case a.Currency != currency:
		return fmt.Errorf("store: %s on %s/%s: currency %s, authorization is %s: %w",
			what, merchantID, xid, currency, a.Currency, ErrConflict)
	case what == "capture" && a.Status != AuthAuthorized && a.Status != AuthPartiallyCaptured:
		return fmt.Errorf("store: capture on %s/%s: status is %s: %w", merchantID, xid, a.Status, ErrConflict)
	case what == "capture" && !at.Before(a.ExpiresAt):
		return fmt.Errorf("store: capture on %s/%s: authorization expired at %s: %w",
			merchantID, xid, a.ExpiresAt.Format(time.RFC3339), ErrExpired)
	case what == "capture":
		return fmt.Errorf("store: capture %d on %s/%s: captured %d of %d authorized: %w",
			amount, merchantID, xid, a.CapturedTotal, a.AuthorizedAmount, ErrLimitExceeded)
	default:
		return fmt.Errorf("store: credit %d on %s/%s: credited %d of %d captured: %w",
			amount, merchantID, xid, a.CreditedTotal, a.CapturedTotal, ErrLimitExceeded)
	}
}

// addToBatch counts an item into an open batch. The UPDATE takes the batch
// row lock, so it serializes against CloseBatch on PostgreSQL: an item is
// never added to a batch that has been closed.
func (t *txn) addToBatch(ctx context.Context, merchantID, batchID string) error {
	if batchID == "" {
		return nil
	}
	res, err := t.exec(ctx, `UPDATE batches SET item_count = item_count + 1
		WHERE merchant_id = ? AND batch_id = ? AND status = 'open'`, merchantID, batchID)
	if err != nil {
		return fmt.Errorf("store: add to batch %s/%s: %w", merchantID, batchID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: add to batch %s/%s: %w", merchantID, batchID, err)
	} else if n == 0 {
		if _, err := t.GetBatch(ctx, merchantID, batchID); err != nil {
			return err
		}
		return fmt.Errorf("store: add to batch %s/%s: batch closed: %w", merchantID, batchID, ErrConflict)
	}
	return nil
}

func checkItem(what, merchantID, id, xid string, amount int64, currency string, status CaptureStatus, created time.Time) error {
	if err := checkID("merchant ID", merchantID); err != nil {
		return err
	}
	if err := checkID(what+" ID", id); err != nil {
		return err
	}
	if err := checkID("XID", xid); err != nil {
		return err
	}
	if err := checkMoney(what, amount, currency, true); err != nil {
		return err
	}
	if status != "" && status != CaptureAccepted && status != CaptureSettled {
		return invalidf("%s status %q", what, status)
	}
	if created.IsZero() {
		return invalidf("%s time must be set", what)
	}
	return nil
}

func itemStatus(s CaptureStatus) string {
	if s == "" {
		return string(CaptureAccepted)
	}
	return string(s)
}

func (t *txn) InsertCapture(ctx context.Context, c *Capture) (*Authorization, error) {
	if err := checkItem("capture", c.MerchantID, c.CaptureID, c.XID, c.Amount, c.Currency, c.Status, c.CreatedAt); err != nil {
		return nil, fmt.Errorf("store: insert capture: %w", err)
	}
	var out *Authorization
	err := t.atomic(ctx, func() error {
		// The limit check is in the UPDATE itself: on PostgreSQL a concurrent
		// capture blocks on the row lock and the WHERE clause is re-evaluated
		// against the committed totals, so two captures can never both fit.
		res, err := t.exec(ctx, `UPDATE authorizations SET
				captured_total = captured_total + ?,
				status = CASE WHEN captured_total + ? = authorized_amount THEN 'captured' ELSE 'partially_captured' END
			WHERE merchant_id = ? AND xid = ? AND currency = ?
			  AND status IN ('authorized', 'partially_captured')
			  AND captured_total + ? <= authorized_amount
			  AND expires_at > ?`,
			c.Amount, c.Amount, c.MerchantID, c.XID, c.Currency, c.Amount, micros(c.CreatedAt))
		if err != nil {
			return fmt.Errorf("store: capture on %s/%s: %w", c.MerchantID, c.XID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: capture on %s/%s: %w", c.MerchantID, c.XID, err)
		} else if n == 0 {
			return t.explainRefusal(ctx, "capture", c.MerchantID, c.XID, c.Currency, c.Amount, c.CreatedAt)
		}
		if err := t.addToBatch(ctx, c.MerchantID, c.BatchID); err != nil {
			return err
		}
		if _, err := t.exec(ctx, `INSERT INTO captures
				(merchant_id, capture_id, xid, amount, currency, status, batch_id, created_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			c.MerchantID, c.CaptureID, c.XID, c.Amount, c.Currency, itemStatus(c.Status),
			nullString(c.BatchID), micros(c.CreatedAt)); err != nil {
			return t.writeErr(err, "insert capture %s/%s", c.MerchantID, c.CaptureID)
		}
		out, err = t.GetAuthorization(ctx, c.MerchantID, c.XID)
		return err
	})
	return out, err
}

func (t *txn) InsertCredit(ctx context.Context, c *Credit) (*Authorization, error) {
	if err := checkItem("credit", c.MerchantID, c.CreditID, c.XID, c.Amount, c.Currency, c.Status, c.CreatedAt); err != nil {
		return nil, fmt.Errorf("store: insert credit: %w", err)
	}
	var out *Authorization
	err := t.atomic(ctx, func() error {
		res, err := t.exec(ctx, `UPDATE authorizations SET credited_total = credited_total + ?
			WHERE merchant_id = ? AND xid = ? AND currency = ? AND credited_total + ? <= captured_total`,
			c.Amount, c.MerchantID, c.XID, c.Currency, c.Amount)
		if err != nil {
			return fmt.Errorf("store: credit on %s/%s: %w", c.MerchantID, c.XID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: credit on %s/%s: %w", c.MerchantID, c.XID, err)
		} else if n == 0 {
			return t.explainRefusal(ctx, "credit", c.MerchantID, c.XID, c.Currency, c.Amount, c.CreatedAt)
		}
		if err := t.addToBatch(ctx, c.MerchantID, c.BatchID); err != nil {
			return err
		}
		if _, err := t.exec(ctx, `INSERT INTO credits
				(merchant_id, credit_id, xid, amount, currency, status, batch_id, created_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			c.MerchantID, c.CreditID, c.XID, c.Amount, c.Currency, itemStatus(c.Status),
			nullString(c.BatchID), micros(c.CreatedAt)); err != nil {
			return t.writeErr(err, "insert credit %s/%s", c.MerchantID, c.CreditID)
		}
		out, err = t.GetAuthorization(ctx, c.MerchantID, c.XID)
		return err
	})
	return out, err
}

const itemColumns = `merchant_id, %s, xid, amount, currency, status, batch_id, created_at, reversed_amount`

type itemRow struct {
	merchantID, id, xid, currency, status string
	amount                                int64
	batch                                 sql.NullString
	created                               int64
	reversed                              int64
}

func (r *itemRow) dest() []any {
	return []any{&r.merchantID, &r.id, &r.xid, &r.amount, &r.currency, &r.status, &r.batch, &r.created, &r.reversed}
}

func (t *txn) getItem(ctx context.Context, table, idCol, merchantID, id string) (*itemRow, error) {
	var r itemRow
	err := t.queryRow(ctx, `SELECT `+fmt.Sprintf(itemColumns, idCol)+` FROM `+table+
		` WHERE merchant_id = ? AND `+idCol+` = ?`, merchantID, id).Scan(r.dest()...)
	if err != nil {
		return nil, notFound(err, "get %s %s/%s", table, merchantID, id)
	}
	return &r, nil
}

func (t *txn) listItems(ctx context.Context, table, idCol, merchantID, xid string) ([]itemRow, error) {
	rows, err := t.query(ctx, `SELECT `+fmt.Sprintf(itemColumns, idCol)+` FROM `+table+
		` WHERE merchant_id = ? AND xid = ? ORDER BY created_at, `+idCol, merchantID, xid)
	if err != nil {
		return nil, fmt.Errorf("store: list %s %s/%s: %w", table, merchantID, xid, err)
	}
	defer rows.Close()
	var out []itemRow
	for rows.Next() {
		var r itemRow
		if err := rows.Scan(r.dest()...); err != nil {
			return nil, fmt.Errorf("store: list %s %s/%s: %w", table, merchantID, xid, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list %s %s/%s: %w", table, merchantID, xid, err)
	}
	return out, nil
}

func (r *itemRow) capture() Capture {
	return Capture{MerchantID: r.merchantID, CaptureID: r.id, XID: r.xid, Amount: r.amount, Currency: r.currency,
		Status: CaptureStatus(r.status), BatchID: r.batch.String, CreatedAt: fromMicros(r.created), ReversedAmount: r.reversed}
}

func (r *itemRow) credit() Credit {
	return Credit{MerchantID: r.merchantID, CreditID: r.id, XID: r.xid, Amount: r.amount, Currency: r.currency,
		Status: CaptureStatus(r.status), BatchID: r.batch.String, CreatedAt: fromMicros(r.created), ReversedAmount: r.reversed}
}

func (t *txn) GetCapture(ctx context.Context, merchantID, captureID string) (*Capture, error) {
	r, err := t.getItem(ctx, "captures", "capture_id", merchantID, captureID)
	if err != nil {
		return nil, err
	}
	c := r.capture()
	return &c, nil
}

func (t *txn) ListCaptures(ctx context.Context, merchantID, xid string) ([]Capture, error) {
	rs, err := t.listItems(ctx, "captures", "capture_id", merchantID, xid)
	if err != nil {
		return nil, err
	}
	out := make([]Capture, len(rs))
	for i := range rs {
		out[i] = rs[i].capture()
	}
	return out, nil
}

func (t *txn) GetCredit(ctx context.Context, merchantID, creditID string) (*Credit, error) {
	r, err := t.getItem(ctx, "credits", "credit_id", merchantID, creditID)
	if err != nil {
		return nil, err
	}
	c := r.credit()
	return &c, nil
}

func (t *txn) ListCredits(ctx context.Context, merchantID, xid string) ([]Credit, error) {
	rs, err := t.listItems(ctx, "credits", "credit_id", merchantID, xid)
	if err != nil {
		return nil, err
	}
	out := make([]Credit, len(rs))
	for i := range rs {
		out[i] = rs[i].credit()
	}
	return out, nil
}

func (t *txn) OpenBatch(ctx context.Context, b *Batch) error {
	if err := checkID("merchant ID", b.MerchantID); err != nil {
		return fmt.Errorf("store: open batch: %w", err)
	}
	if err := checkID("batch ID", b.BatchID); err != nil {
		return fmt.Errorf("store: open batch: %w", err)
	}
	if b.OpenedAt.IsZero() {
		return fmt.Errorf("store: open batch: %w", invalidf("opened time must be set"))
	}
	return t.atomic(ctx, func() error {
		if _, err := t.exec(ctx, `INSERT INTO batches (merchant_id, batch_id, status, item_count, opened_at)
			VALUES (?, ?, 'open', 0, ?)`, b.MerchantID, b.BatchID, micros(b.OpenedAt)); err != nil {
			return t.writeErr(err, "open batch %s/%s", b.MerchantID, b.BatchID)
		}
		b.Status, b.ItemCount, b.ClosedAt = BatchOpen, 0, time.Time{}
		return nil
	})
}

func (t *txn) GetBatch(ctx context.Context, merchantID, batchID string) (*Batch, error) {
	var b Batch
	var status string
	var opened int64
	var closed sql.NullInt64
	err := t.queryRow(ctx, `SELECT merchant_id, batch_id, status, item_count, opened_at, closed_at
		FROM batches WHERE merchant_id = ? AND batch_id = ?`, merchantID, batchID).
		Scan(&b.MerchantID, &b.BatchID, &status, &b.ItemCount, &opened, &closed)
	if err != nil {
		return nil, notFound(err, "get batch %s/%s", merchantID, batchID)
	}
	b.Status, b.OpenedAt, b.ClosedAt = BatchStatus(status), fromMicros(opened), fromNullMicros(closed)
	return &b, nil
}

func (t *txn) CloseBatch(ctx context.Context, merchantID, batchID string, at time.Time) error {
	if at.IsZero() {
		return invalidf("close batch: time must be set")
	}
	return t.atomic(ctx, func() error {
		res, err := t.exec(ctx, `UPDATE batches SET status = 'closed', closed_at = ?
			WHERE merchant_id = ? AND batch_id = ? AND status = 'open'`, micros(at), merchantID, batchID)
		if err != nil {
			return fmt.Errorf("store: close batch %s/%s: %w", merchantID, batchID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: close batch %s/%s: %w", merchantID, batchID, err)
		} else if n == 0 {
			if _, err := t.GetBatch(ctx, merchantID, batchID); err != nil {
				return err
			}
			return fmt.Errorf("store: close batch %s/%s: already closed: %w", merchantID, batchID, ErrConflict)
		}
		return nil
	})
}

func (t *txn) BatchTotals(ctx context.Context, merchantID, batchID string) ([]BatchTotal, error) {
	if _, err := t.GetBatch(ctx, merchantID, batchID); err != nil {
		return nil, err
	}
	rows, err := t.query(ctx, `
		SELECT currency, 'capture', COUNT(*), CAST(SUM(amount) AS BIGINT) FROM captures
		 WHERE merchant_id = ? AND batch_id = ? GROUP BY currency
		UNION ALL
		SELECT currency, 'credit', COUNT(*), CAST(SUM(amount) AS BIGINT) FROM credits
		 WHERE merchant_id = ? AND batch_id = ? GROUP BY currency
		UNION ALL
		SELECT currency, type, COUNT(*), CAST(SUM(amount) AS BIGINT) FROM reversals
		 WHERE merchant_id = ? AND batch_id = ? GROUP BY currency, type
		ORDER BY 1, 2`, merchantID, batchID, merchantID, batchID, merchantID, batchID)
	if err != nil {
		return nil, fmt.Errorf("store: batch totals %s/%s: %w", merchantID, batchID, err)
	}
	defer rows.Close()
	var out []BatchTotal
	for rows.Next() {
		var bt BatchTotal
		var typ string
		if err := rows.Scan(&bt.Currency, &typ, &bt.Count, &bt.Amount); err != nil {
			return nil, fmt.Errorf("store: batch totals %s/%s: %w", merchantID, batchID, err)
		}
		bt.Type = TxnType(typ)
		out = append(out, bt)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: batch totals %s/%s: %w", merchantID, batchID, err)
	}
	return out, nil
}
