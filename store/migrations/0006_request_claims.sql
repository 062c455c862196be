-- setpay schema, version 6.
-- A processed request may now be claimed before its answer exists (Store.Claim):
-- the gateway commits the claim for an authorization BEFORE it asks the issuer, so
-- a retry on any replica finds it and does not ask again. claim_token names the
-- holder (random, per attempt); claimed_until (Unix microseconds) is when its lease
-- runs out and another replica may take the claim over. Both are NULL once the
-- answer is stored (response IS NOT NULL), and on rows written by Idempotent.

ALTER TABLE processed_requests ADD COLUMN claim_token BLOB;

ALTER TABLE processed_requests ADD COLUMN claimed_until BIGINT;
