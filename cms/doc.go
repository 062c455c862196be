// Package cms reads and writes the small subset of Cryptographic Message
// Syntax (RFC 5652) that setpay's protocol messages need, on
// golang.org/x/crypto/cryptobyte, with DER output that `openssl cms` reads.
//
// Forms written:
//
//   - SignedData (Sign): one SignerInfo identified by issuerAndSerialNumber
//     (or subjectKeyIdentifier), signed attributes contentType,
//     messageDigest and signingTime always present, content attached or
//     detached, certificates embedded only when the caller asks (peers
//     cache them by thumbprint). Algorithms follow the key: ECDSA P-256
//     with SHA-256 (ecdsa-with-SHA256), P-384 with SHA-384, RSA with
//     SHA-256 as PKCS#1 v1.5 (sha256WithRSAEncryption) or RSASSA-PSS with
//     explicit parameters (SHA-256, MGF1-SHA-256, salt 32) encoded exactly
//     as OpenSSL does. These are the mechanisms every PKCS#11 token,
//     SoftHSM 2.6.1 included, offers for CKM_ECDSA / CKM_RSA_PKCS(_PSS).
//   - EnvelopedData with AES-256-CBC, or AuthEnvelopedData (RFC 5083/5084)
//     with AES-256-GCM (12-byte nonce, 16-byte tag in mac). GCM never goes
//     into EnvelopedData: it has no field for the tag, so such messages
//     are non-standard and other readers cannot check them. An
//     AuthEnvelopedData whose content type is not id-data carries authAttrs
//     with the content-type attribute (RFC 5083 §2.1), whose DER is the GCM
//     additional data, so the type cannot be relabelled; id-data envelopes
//     carry none (OpenSSL 3.0 cannot parse authAttrs, openssl/openssl#31635,
//     so typed envelopes need OpenSSL 4.0 to open). The content key goes to each RSA recipient in a
//     KeyTransRecipientInfo with RSAES-OAEP; OAEP-SHA-1 is the default
//     because SoftHSM 2.6.1 unwraps only with it, and OAEP-SHA-256 writes
//     both hashFunc and maskGenFunc so OpenSSL does not fall back to
//     MGF1-SHA-1. EC recipient certificates get a KeyAgreeRecipientInfo
//     (RFC 5753 dhSinglePass-stdDH-sha256kdf-scheme, ephemeral-static ECDH,
//     AES-256 key wrap); the recipient side needs only raw ECDH
//     (KeyAgreer), which PKCS#11 tokens offer as CKM_ECDH1_DERIVE.
//
// Decryption has one cipher policy, built into Decrypt and DecryptAgree so
// no caller can forget it: only AuthEnvelopedData with AES-256-GCM is
// decrypted (EnvelopedData with AES-CBC is written for legacy readers but
// refused with ErrNotAuthenticated before any key operation: it would be a
// padding oracle), key transport is RSAES-OAEP only (PKCS#1 v1.5 is refused
// at parse time), and authAttrs must bind a non-id-data content type
// (ErrContentTypeNotBound at parse time). Once a RecipientInfo for the
// caller is found, every failure — a key unwrap that fails, a wrong-size
// key, a bad tag — takes the same path (a random content key stands in for
// one that did not unwrap, RFC 3218 §2.3) and returns ErrDecrypt with one
// text; the cause is reachable with errors.Unwrap for the recipient's logs.
//
// Parsers take untrusted DER: they enforce Limits (input size,
// certificates, recipients), accept only an allow-list of algorithms
// (SHA-256/384/512 digests; ECDSA, RSA PKCS#1 v1.5 and RSA-PSS signatures;
// RSAES-OAEP key transport; ECDH with an SHA-2 X9.63 KDF and AES-256 key
// wrap; AES-256-CBC and AES-256-GCM), and return errors
// instead of panicking. Verification checks the signature and signed
// attributes only; certificate path validation is the pki package's job.
//
// Private keys are used only through crypto.Signer, crypto.Decrypter and
// KeyAgreer,
// so token-backed keys work unchanged. There is no package-level
// configuration: everything is passed in option structs.
package cms
