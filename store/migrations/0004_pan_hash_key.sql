-- setpay schema, version 4: PAN hashes keyed inside the gateway's token.
-- Until now pan_hash was HMAC-SHA256 under a software key kept in a file beside
-- the store, next to a first-6/last-4 mask: with both, a PAN falls to a brute
-- force over its 6 middle digits in well under a second. New rows hash with a
-- token-held, non-extractable key that pan_hash_key names (a pkcs11: URI), and
-- keep the last 4 digits only.
--
-- Existing rows cannot be re-hashed (the PAN is gone, as it should be), so their
-- hash is erased rather than kept: it would stay recoverable for as long as any
-- copy of the old key file or of its backups exists. They are marked
-- 'erased:software-key' so no lookup ever compares them with a new hash, and
-- their mask is cut to the last 4 digits (masks only ever held digits in the
-- first 6 and last 4 places, so the first 6 are the only ones to star). After
-- this migration, destroy the old key file and its backups (docs/protocol.md).
-- substr works on BLOB (SQLite) and BYTEA (PostgreSQL) alike.

ALTER TABLE authorizations ADD COLUMN pan_hash_key TEXT NOT NULL DEFAULT '';

UPDATE authorizations
   SET pan_hash = substr(pan_hash, 1, 0),
       pan_hash_key = 'erased:software-key',
       pan_mask = '******' || substr(pan_mask, 7);

DROP INDEX authorizations_pan_hash;

CREATE INDEX authorizations_pan_hash ON authorizations (pan_hash_key, pan_hash);
