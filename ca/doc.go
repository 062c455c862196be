// Package ca is the SET certificate authority: one Authority per CA (root,
// brand, cardholder CA, merchant CA, payment-gateway CA), each signing only
// through a crypto.Signer whose private key stays in a token.
//
// An Authority is not a signing helper: it decides subject, policies, key
// usage, validity and serial itself, ignores everything in a CSR except the
// public key and its proof-of-possession signature, issues only the roles its
// own role allows, and issues merchant and gateway certificates only against
// a single-use enrollment secret.
package ca
