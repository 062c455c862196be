// Package wallet is the cardholder's side of SET: it registers a card with the
// cardholder CA and buys from merchants, keeping the card number away from the merchant.
package wallet

import (
	"crypto"
	"crypto/x509"
)

// Card is what the wallet knows about a payment card. PANSecret ties the card to the
// cardholder certificate (pki.CardholderID) and travels only inside the PI, enveloped to
// the gateway. A Card is never logged; use pki.MaskPAN to show it.
type Card struct {
	PAN       string
	Expiry    string // YYYYMM
	PANSecret []byte
}

// Identity is a registered cardholder: the signature key (in a token, or decrypted from
// an encrypted PKCS#8 file), its certificate and chain from the CCA, and the card.
type Identity struct {
	Key   crypto.Signer
	Cert  *x509.Certificate
	Chain []*x509.Certificate // CCA, brand (root excluded)
	// Root is the wallet's one trust anchor, the root its sealed card file is
	// bound to (set by Register and Load).
	Root *x509.Certificate
	Card Card
}
