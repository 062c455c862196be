package pki

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"
)

// maxCachedChains bounds the verified-chain cache; when full it starts over, which
// costs a re-verification each, never a wrong answer.
const maxCachedChains = 4096

// chainCache remembers chains that verified, so the same certificates arriving in
// every message are not re-verified every time: a purchase carries about six chains,
// and verifying each (its signatures, the standard library's second pass, a CRL
// signature per link) made signature verification 40% of a purchase's CPU.
//
// An entry holds only until the earliest NotAfter or CRL nextUpdate in the chain, and
// only while the CRL source returns byte-identical CRLs for every link: a new CRL (a
// revocation, say) means full verification again. Failures are never cached.
type chainCache struct {
	mu      sync.RWMutex
	entries map[[32]byte]*cachedChain
}

type cachedChain struct {
	chain    []*x509.Certificate
	from, to time.Time // at must lie within [from, to]
	crls     [][]byte  // Raw of the CRL used for each link, in chain order
}

func chainKey(leaf *x509.Certificate, intermediates []*x509.Certificate, want Expect) [32]byte {
	h := sha256.New()
	h.Write([]byte{byte(want.Role), byte(want.Purpose)})
	for _, c := range append([]*x509.Certificate{leaf}, intermediates...) {
		sum := sha256.Sum256(c.Raw)
		h.Write(sum[:])
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// lookup returns the cached chain if it still holds at `at` with the CRLs the source
// has now.
func (c *chainCache) lookup(ctx context.Context, crls CRLSource, key [32]byte, at time.Time) []*x509.Certificate {
	c.mu.RLock()
	e := c.entries[key]
	c.mu.RUnlock()
	if e == nil || at.Before(e.from) || at.After(e.to) {
		return nil
	}
	for i := 0; i < len(e.chain)-1; i++ {
		crl, err := crls.CRL(ctx, e.chain[i+1])
		if err != nil || crl == nil || !bytes.Equal(crl.Raw, e.crls[i]) {
			return nil
		}
	}
	return append([]*x509.Certificate(nil), e.chain...)
}

// store records a chain that verified with these CRLs (one per link).
func (c *chainCache) store(key [32]byte, chain []*x509.Certificate, used []*x509.RevocationList) {
	if len(used) != len(chain)-1 {
		return
	}
	e := &cachedChain{chain: append([]*x509.Certificate(nil), chain...)}
	for i, cert := range chain {
		if i == 0 || cert.NotBefore.After(e.from) {
			e.from = cert.NotBefore
		}
		if i == 0 || cert.NotAfter.Before(e.to) {
			e.to = cert.NotAfter
		}
	}
	for _, crl := range used {
		if t := crl.ThisUpdate.Add(-CRLClockSkew); t.After(e.from) {
			e.from = t
		}
		if !crl.NextUpdate.IsZero() && crl.NextUpdate.Before(e.to) {
			e.to = crl.NextUpdate
		}
		e.crls = append(e.crls, crl.Raw)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= maxCachedChains {
		c.entries = map[[32]byte]*cachedChain{}
	}
	c.entries[key] = e
}
