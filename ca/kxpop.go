package ca

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/setpay/setpay/pki"
)

// Limits of the in-memory table of outstanding key-exchange challenges. They
// are short-lived by design; a restart simply makes the client ask again.
const (
	KXChallengeTTL     = 10 * time.Minute
	maxPendingKXProofs = 4096
	maxSPKISize        = 4 << 10
)

type pendingKX struct {
	expected []byte
	expires  time.Time
}

type kxTable struct {
	mu      sync.Mutex
	pending map[[32]byte]pendingKX
}

func kxKey(role pki.Role, id string, spki []byte) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%s\x00", int(role), id)
	h.Write(spki)
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

func parseSPKI(der []byte) (crypto.PublicKey, error) {
	if len(der) == 0 || len(der) > maxSPKISize {
		return nil, fail(ReasonBadRequest, "public key of %d bytes, want 1..%d", len(der), maxSPKISize)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, &Error{Reason: ReasonBadRequest, Err: fmt.Errorf("parse public key: %w", err)}
	}
	if _, err := pki.CheckPublicKey(pub); err != nil {
		return nil, &Error{Reason: ReasonKeyNotAllowed, Err: err}
	}
	return pub, nil
}

// KeyExchangeChallenge starts proof of possession for a key-exchange key that
// cannot sign (a token key with key-exchange usage only). publicKey is the
// SubjectPublicKeyInfo DER. The holder answers with pki.AnswerKXChallenge and
// passes the answer as EntityRequest.KeyExchangeProof within KXChallengeTTL.
func (a *Authority) KeyExchangeChallenge(ctx context.Context, role pki.Role, id string, publicKey []byte) (pki.KXChallenge, error) {
	if (role != pki.RoleMerchant && role != pki.RoleGateway) || role.Issuer() != a.role {
		return pki.KXChallenge{}, fail(ReasonRoleNotAllowed, "a %s does not issue %s key-exchange certificates", a.role, role)
	}
	if err := pki.ValidateEntityID(id); err != nil {
		return pki.KXChallenge{}, &Error{Reason: ReasonBadRequest, Err: err}
	}
	pub, err := parseSPKI(publicKey)
	if err != nil {
		return pki.KXChallenge{}, err
	}
	ch, expected, err := pki.NewKXChallenge(pub)
	if err != nil {
		return pki.KXChallenge{}, &Error{Reason: ReasonKeyNotAllowed, Err: err}
	}
	now := a.now()
	a.kx.mu.Lock()
	defer a.kx.mu.Unlock()
	if len(a.kx.pending) >= maxPendingKXProofs {
		for k, p := range a.kx.pending {
			if !now.Before(p.expires) {
				delete(a.kx.pending, k)
			}
		}
		if len(a.kx.pending) >= maxPendingKXProofs {
			return pki.KXChallenge{}, fmt.Errorf("ca: too many outstanding key-exchange challenges")
		}
	}
	a.kx.pending[kxKey(role, id, publicKey)] = pendingKX{expected: expected, expires: now.Add(KXChallengeTTL)}
	return ch, nil
}

// checkKXProof consumes the outstanding challenge of (role, id, key) and
// checks the answer in constant time.
func (a *Authority) checkKXProof(role pki.Role, id string, publicKey, proof []byte) (crypto.PublicKey, error) {
	pub, err := parseSPKI(publicKey)
	if err != nil {
		return nil, err
	}
	k := kxKey(role, id, publicKey)
	a.kx.mu.Lock()
	p, ok := a.kx.pending[k]
	delete(a.kx.pending, k)
	a.kx.mu.Unlock()
	if !ok || !a.now().Before(p.expires) {
		return nil, fail(ReasonBadProofOfPossession, "no outstanding key-exchange challenge for this key")
	}
	if !hmac.Equal(p.expected, proof) {
		return nil, fail(ReasonBadProofOfPossession, "key-exchange challenge answered wrongly")
	}
	return pub, nil
}
