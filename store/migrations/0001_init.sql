-- setpay schema, version 1. Portable between SQLite and PostgreSQL: the only
-- dialect difference is BLOB, which the PostgreSQL dialect rewrites to BYTEA.
-- Times are BIGINT Unix microseconds (UTC) so both engines compare and store
-- them exactly the same way; money is BIGINT minor units plus ISO 4217 code.

CREATE TABLE processed_requests (
    scope        TEXT   NOT NULL,
    request_id   TEXT   NOT NULL,
    request_hash BLOB   NOT NULL,
    response     BLOB,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, request_id)
);

CREATE INDEX processed_requests_created_at ON processed_requests (created_at);

CREATE TABLE batches (
    merchant_id TEXT   NOT NULL,
    batch_id    TEXT   NOT NULL,
    status      TEXT   NOT NULL CHECK (status IN ('open', 'closed')),
    item_count  BIGINT NOT NULL DEFAULT 0,
    opened_at   BIGINT NOT NULL,
    closed_at   BIGINT,
    PRIMARY KEY (merchant_id, batch_id)
);

CREATE TABLE authorizations (
    merchant_id       TEXT   NOT NULL,
    xid               TEXT   NOT NULL,
    amount            BIGINT NOT NULL CHECK (amount >= 0),
    currency          TEXT   NOT NULL,
    authorized_amount BIGINT NOT NULL CHECK (authorized_amount >= 0),
    captured_total    BIGINT NOT NULL DEFAULT 0 CHECK (captured_total >= 0),
    credited_total    BIGINT NOT NULL DEFAULT 0 CHECK (credited_total >= 0),
    status            TEXT   NOT NULL,
    decline_reason    TEXT   NOT NULL DEFAULT '',
    auth_code         TEXT   NOT NULL DEFAULT '',
    pan_hash          BLOB   NOT NULL,
    pan_mask          TEXT   NOT NULL,
    card_expiry       TEXT   NOT NULL,
    capture_token_id  TEXT   NOT NULL DEFAULT '',
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, xid),
    CHECK (captured_total <= authorized_amount),
    CHECK (credited_total <= captured_total)
);

CREATE INDEX authorizations_pan_hash ON authorizations (pan_hash);

CREATE TABLE captures (
    merchant_id TEXT   NOT NULL,
    capture_id  TEXT   NOT NULL,
    xid         TEXT   NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    currency    TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    batch_id    TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, capture_id),
    FOREIGN KEY (merchant_id, xid) REFERENCES authorizations (merchant_id, xid),
    FOREIGN KEY (merchant_id, batch_id) REFERENCES batches (merchant_id, batch_id)
);

CREATE INDEX captures_xid ON captures (merchant_id, xid);
CREATE INDEX captures_batch ON captures (merchant_id, batch_id);

CREATE TABLE credits (
    merchant_id TEXT   NOT NULL,
    credit_id   TEXT   NOT NULL,
    xid         TEXT   NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    currency    TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    batch_id    TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, credit_id),
    FOREIGN KEY (merchant_id, xid) REFERENCES authorizations (merchant_id, xid),
    FOREIGN KEY (merchant_id, batch_id) REFERENCES batches (merchant_id, batch_id)
);

CREATE INDEX credits_xid ON credits (merchant_id, xid);
CREATE INDEX credits_batch ON credits (merchant_id, batch_id);

CREATE TABLE orders (
    xid               TEXT   NOT NULL PRIMARY KEY,
    merchant_order_id TEXT   NOT NULL UNIQUE,
    description_hash  BLOB   NOT NULL,
    amount            BIGINT NOT NULL CHECK (amount >= 0),
    currency          TEXT   NOT NULL,
    state             TEXT   NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE certificates (
    issuer    TEXT   NOT NULL,
    serial    TEXT   NOT NULL,
    role      TEXT   NOT NULL,
    subject   TEXT   NOT NULL,
    not_after BIGINT NOT NULL,
    der       BLOB   NOT NULL,
    issued_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, serial)
);

CREATE TABLE revocations (
    issuer     TEXT   NOT NULL,
    serial     TEXT   NOT NULL,
    reason     INTEGER NOT NULL,
    revoked_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, serial),
    FOREIGN KEY (issuer, serial) REFERENCES certificates (issuer, serial)
);

CREATE TABLE enrollment_secrets (
    id          TEXT   NOT NULL PRIMARY KEY,
    role        TEXT   NOT NULL,
    secret_hash BLOB   NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE crl_numbers (
    issuer TEXT   NOT NULL PRIMARY KEY,
    number BIGINT NOT NULL
);

-- The audit chain head is a single row. Every append updates it first, which
-- takes a row lock on PostgreSQL (and the write lock on SQLite), so concurrent
-- appends from several replicas serialize without dialect-specific locking.
-- It also lets VerifyAudit notice records cut off the end of the chain.
-- The row is created by the first append (hex blob literals are not portable).
CREATE TABLE audit_head (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  BIGINT  NOT NULL,
    hash BLOB    NOT NULL
);

CREATE TABLE audit_log (
    seq         BIGINT NOT NULL PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT   NOT NULL,
    key_uri     TEXT   NOT NULL,
    purpose     TEXT   NOT NULL,
    xid         TEXT   NOT NULL,
    details     TEXT   NOT NULL,
    prev_hash   BLOB   NOT NULL,
    hash        BLOB   NOT NULL
);
