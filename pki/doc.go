// Package pki holds the SET certificate model shared by the wallet, merchant,
// payment gateway and CA: role and purpose policy OIDs, the single chain
// verifier (roles, key usage, validity, revocation), a thumbprint cache, bounded
// parsing of certificates from untrusted bytes and the cardholder/PAN binding.
//
// Nothing in this package issues certificates; that is package ca.
package pki
