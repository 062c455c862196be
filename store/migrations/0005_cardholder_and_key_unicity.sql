-- setpay schema, version 3.
-- An order remembers the cardholder certificate that dual-signed its purchase
-- request (SHA-256 thumbprint): only that certificate may inquire about it. Orders
-- are created by the purchase request itself, so the column is set on every row
-- written from now on.
--
-- A public key is certified once, across every CA sharing this store and every
-- role (key unicity): certified_keys holds the SHA-256 of each certified
-- SubjectPublicKeyInfo, written in the transaction that records the certificate,
-- and its primary key refuses a second certification even from two replicas at
-- once. Certificates recorded before this version are not in it.

ALTER TABLE orders ADD COLUMN cardholder BLOB;

CREATE TABLE certified_keys (
    key_hash BLOB NOT NULL PRIMARY KEY,
    issuer   TEXT NOT NULL,
    serial   TEXT NOT NULL,
    FOREIGN KEY (issuer, serial) REFERENCES certificates (issuer, serial)
);
