-- setpay schema, version 2: the payment lifecycle after authorization.
-- Captures and credits remember how much of them was reversed, so a reversal
-- can never undo more than the item it names; every authorization, capture and
-- credit reversal is a row of its own (its ID is the request's pair ID), so
-- batch totals and audits see it; the merchant keeps the capture token the
-- gateway issued with an authorization.

ALTER TABLE captures ADD COLUMN reversed_amount BIGINT NOT NULL DEFAULT 0;

ALTER TABLE credits ADD COLUMN reversed_amount BIGINT NOT NULL DEFAULT 0;

ALTER TABLE orders ADD COLUMN capture_token BLOB;

CREATE TABLE reversals (
    merchant_id TEXT   NOT NULL,
    reversal_id TEXT   NOT NULL,
    xid         TEXT   NOT NULL,
    type        TEXT   NOT NULL CHECK (type IN ('auth_reversal', 'capture_reversal', 'credit_reversal')),
    target_id   TEXT   NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    currency    TEXT   NOT NULL,
    batch_id    TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, reversal_id),
    FOREIGN KEY (merchant_id, xid) REFERENCES authorizations (merchant_id, xid),
    FOREIGN KEY (merchant_id, batch_id) REFERENCES batches (merchant_id, batch_id)
);

CREATE INDEX reversals_xid ON reversals (merchant_id, xid);
CREATE INDEX reversals_batch ON reversals (merchant_id, batch_id);
