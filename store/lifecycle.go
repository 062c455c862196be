package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

func (r *Reversal) validate() error {
	switch r.Type {
	case TxnAuthReversal:
		if r.BatchID != "" {
			return invalidf("an authorization reversal is never in a batch")
		}
	case TxnCaptureReversal, TxnCreditReversal:
	default:
		return invalidf("reversal type %q", r.Type)
	}
	if err := checkItem("reversal", r.MerchantID, r.ReversalID, r.XID, r.Amount, r.Currency, "", r.CreatedAt); err != nil {
		return err
	}
	return checkID("reversal target", r.TargetID)
}

func (t *txn) InsertReversal(ctx context.Context, r *Reversal) (*Authorization, error) {
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("store: insert reversal: %w", err)
	}
	var out *Authorization
	err := t.atomic(ctx, func() error {
		var err error
		switch r.Type {
		case TxnAuthReversal:
			a, err := t.GetAuthorization(ctx, r.MerchantID, r.XID)
			if err != nil {
				return err
			}
			if a.Currency != r.Currency {
				return fmt.Errorf("store: reverse authorization %s/%s: currency %s, authorization is %s: %w",
					r.MerchantID, r.XID, r.Currency, a.Currency, ErrConflict)
			}
			if _, err := t.ReverseAuthorization(ctx, r.MerchantID, r.XID, r.Amount); err != nil {
				return err
			}
		case TxnCaptureReversal:
			err = t.reverseItem(ctx, "captures", "capture_id", "captured_total", r)
		case TxnCreditReversal:
			err = t.reverseItem(ctx, "credits", "credit_id", "credited_total", r)
		}
		if err != nil {
			return err
		}
		if err := t.addToBatch(ctx, r.MerchantID, r.BatchID); err != nil {
			return err
		}
		if _, err := t.exec(ctx, `INSERT INTO reversals
				(merchant_id, reversal_id, xid, type, target_id, amount, currency, batch_id, created_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.MerchantID, r.ReversalID, r.XID, string(r.Type), r.TargetID, r.Amount, r.Currency,
			nullString(r.BatchID), micros(r.CreatedAt)); err != nil {
			return t.writeErr(err, "insert reversal %s/%s", r.MerchantID, r.ReversalID)
		}
		out, err = t.GetAuthorization(ctx, r.MerchantID, r.XID)
		return err
	})
	return out, err
}

// reverseItem undoes r.Amount of the capture or credit r.TargetID and lowers
// the authorization's total. Both limits are in the UPDATEs' WHERE clauses, so
// concurrent reversals on PostgreSQL re-check against committed values.
func (t *txn) reverseItem(ctx context.Context, table, idCol, totalCol string, r *Reversal) error {
	what := string(r.Type)
	res, err := t.exec(ctx, `UPDATE `+table+` SET reversed_amount = reversed_amount + ?
		WHERE merchant_id = ? AND `+idCol+` = ? AND xid = ? AND currency = ? AND reversed_amount + ? <= amount`,
		r.Amount, r.MerchantID, r.TargetID, r.XID, r.Currency, r.Amount)
	if err != nil {
		return fmt.Errorf("store: %s of %s/%s: %w", what, r.MerchantID, r.TargetID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: %s of %s/%s: %w", what, r.MerchantID, r.TargetID, err)
	} else if n == 0 {
		it, err := t.getItem(ctx, table, idCol, r.MerchantID, r.TargetID)
		switch {
		case err != nil:
			return err
		case it.xid != r.XID:
			return fmt.Errorf("store: %s: %s belongs to transaction %s, not %s: %w", what, r.TargetID, it.xid, r.XID, ErrNotFound)
		case it.currency != r.Currency:
			return fmt.Errorf("store: %s of %s: currency %s, item is %s: %w", what, r.TargetID, r.Currency, it.currency, ErrConflict)
		}
		return fmt.Errorf("store: %s of %d on %s: %d of %d already reversed: %w",
			what, r.Amount, r.TargetID, it.reversed, it.amount, ErrLimitExceeded)
	}
	// A capture reversal may not leave less captured than was credited; the
	// status follows what is left captured.
	q := `UPDATE authorizations SET credited_total = credited_total - ? WHERE merchant_id = ? AND xid = ?`
	args := []any{r.Amount, r.MerchantID, r.XID}
	if r.Type == TxnCaptureReversal {
		q = `UPDATE authorizations SET captured_total = captured_total - ?,
				status = CASE WHEN captured_total - ? = 0 THEN 'authorized' ELSE 'partially_captured' END
			WHERE merchant_id = ? AND xid = ? AND captured_total - ? >= credited_total`
		args = []any{r.Amount, r.Amount, r.MerchantID, r.XID, r.Amount}
	}
	res, err = t.exec(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("store: %s on %s/%s: %w", what, r.MerchantID, r.XID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: %s on %s/%s: %w", what, r.MerchantID, r.XID, err)
	} else if n == 0 {
		a, err := t.GetAuthorization(ctx, r.MerchantID, r.XID)
		if err != nil {
			return err
		}
		return fmt.Errorf("store: %s of %d on %s/%s: captured %d, credited %d: %w",
			what, r.Amount, r.MerchantID, r.XID, a.CapturedTotal, a.CreditedTotal, ErrLimitExceeded)
	}
	return nil
}

const reversalColumns = `merchant_id, reversal_id, xid, type, target_id, amount, currency, batch_id, created_at`

func (t *txn) ListReversals(ctx context.Context, merchantID, xid string) ([]Reversal, error) {
	rows, err := t.query(ctx, `SELECT `+reversalColumns+` FROM reversals WHERE merchant_id = ? AND xid = ?
		ORDER BY created_at, reversal_id`, merchantID, xid)
	if err != nil {
		return nil, fmt.Errorf("store: list reversals %s/%s: %w", merchantID, xid, err)
	}
	defer rows.Close()
	var out []Reversal
	for rows.Next() {
		var r Reversal
		var typ string
		var batch sql.NullString
		var created int64
		if err := rows.Scan(&r.MerchantID, &r.ReversalID, &r.XID, &typ, &r.TargetID, &r.Amount, &r.Currency, &batch, &created); err != nil {
			return nil, fmt.Errorf("store: list reversals %s/%s: %w", merchantID, xid, err)
		}
		r.Type, r.BatchID, r.CreatedAt = TxnType(typ), batch.String, fromMicros(created)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list reversals %s/%s: %w", merchantID, xid, err)
	}
	return out, nil
}

func (t *txn) ListBatchItems(ctx context.Context, merchantID, batchID string) ([]BatchItem, error) {
	if _, err := t.GetBatch(ctx, merchantID, batchID); err != nil {
		return nil, err
	}
	rows, err := t.query(ctx, `
		SELECT 'capture', capture_id, xid, '', amount, currency, created_at FROM captures
		 WHERE merchant_id = ? AND batch_id = ?
		UNION ALL
		SELECT 'credit', credit_id, xid, '', amount, currency, created_at FROM credits
		 WHERE merchant_id = ? AND batch_id = ?
		UNION ALL
		SELECT type, reversal_id, xid, target_id, amount, currency, created_at FROM reversals
		 WHERE merchant_id = ? AND batch_id = ?
		ORDER BY 7, 2`, merchantID, batchID, merchantID, batchID, merchantID, batchID)
	if err != nil {
		return nil, fmt.Errorf("store: list batch items %s/%s: %w", merchantID, batchID, err)
	}
	defer rows.Close()
	var out []BatchItem
	for rows.Next() {
		var it BatchItem
		var typ string
		var created int64
		if err := rows.Scan(&typ, &it.ID, &it.XID, &it.TargetID, &it.Amount, &it.Currency, &created); err != nil {
			return nil, fmt.Errorf("store: list batch items %s/%s: %w", merchantID, batchID, err)
		}
		it.Type, it.CreatedAt = TxnType(typ), fromMicros(created)
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list batch items %s/%s: %w", merchantID, batchID, err)
	}
	return out, nil
}

// StoredResponse returns what Idempotent stored for (scope, requestID): the
// request hash and the answer bytes; ErrNotFound if nothing was stored. For
// audits and tests that check an answer sent is an answer kept.
func (s *Store) StoredResponse(ctx context.Context, scope, requestID string) (requestHash, response []byte, err error) {
	err = s.db.QueryRowContext(ctx, s.d.rebind(`SELECT request_hash, response FROM processed_requests
		WHERE scope = ? AND request_id = ? AND response IS NOT NULL`), scope, requestID).Scan(&requestHash, &response)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("store: stored response %s/%s: %w", scope, requestID, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("store: stored response %s/%s: %w", scope, requestID, err)
	}
	return requestHash, response, nil
}
