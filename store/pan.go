package store

import (
	"context"
	"fmt"
)

// PANHasher makes the keyed hash of a PAN the gateway stores. The key must live where
// neither the store nor any file on disk can reach it (a token's secret key, see
// NewPANHasher), so that a copy of the store does not let anyone confirm a guessed PAN.
type PANHasher interface {
	HashPAN(ctx context.Context, pan string) ([]byte, error)
	// KeyID names the key (a pkcs11: URI, never the key). It is stored next to each
	// hash, so hashes made under different keys are never compared.
	KeyID() string
}

// MACKey computes HMAC-SHA256 with a key it never reveals; *hsm.SecretKey is one.
type MACKey interface {
	MAC(ctx context.Context, data []byte) ([]byte, error)
	URI() string
}

// panHashContext separates PAN hashes from any other MAC made with the same key.
const panHashContext = "setpay pan-hash v2\x00"

// NewPANHasher returns the PANHasher that computes
// HMAC-SHA256(k, "setpay pan-hash v2" || 0x00 || PAN) inside the token holding k.
func NewPANHasher(k MACKey) PANHasher { return tokenPANHasher{k} }

type tokenPANHasher struct{ k MACKey }

func (h tokenPANHasher) KeyID() string { return h.k.URI() }

func (h tokenPANHasher) HashPAN(ctx context.Context, pan string) ([]byte, error) {
	if !validPAN(pan) {
		return nil, invalidf("PAN must be 12..19 digits")
	}
	m, err := h.k.MAC(ctx, []byte(panHashContext+pan))
	if err != nil {
		return nil, fmt.Errorf("store: PAN hash: %w", err)
	}
	if len(m) != panHashSize {
		return nil, fmt.Errorf("store: PAN hash of %d bytes from %s, want %d", len(m), h.k.URI(), panHashSize)
	}
	return m, nil
}

// panHashSize is the length of an HMAC-SHA256.
const panHashSize = 32

// LegacyPANHashKey is the pan_hash_key that migration 0004 gives rows written before
// PAN hashes were keyed in the token: their hash (made with a software key kept in a
// file) is erased and their mask cut to the last 4 digits.
const LegacyPANHashKey = "erased:software-key"
