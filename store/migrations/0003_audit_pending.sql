-- setpay schema, version 3: audit records are linked into the chain after
-- their transaction commits (see docs/protocol.md, "Audit chain").
--
-- A transaction that uses a private key inserts its record here, in the same
-- transaction as the state change, so the record commits exactly when the
-- change does; it takes no lock another transaction waits for. The chainer
-- moves committed records from here into audit_log, assigning seq, prev_hash
-- and hash under the audit_head lock. On SQLite, whose writers are serialized
-- anyway, records are linked inside their own transaction and this table stays
-- empty. AUTOID is a dialect macro: an increasing integer key assigned on insert.
CREATE TABLE audit_pending (
    id      AUTOID,
    at      BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    key_uri TEXT   NOT NULL,
    purpose TEXT   NOT NULL,
    xid     TEXT   NOT NULL,
    details TEXT   NOT NULL
);
