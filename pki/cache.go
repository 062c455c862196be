package pki

import (
	"container/list"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"sync"
)

// Thumbprint is the SHA-256 of a certificate's DER encoding.
type Thumbprint [sha256.Size]byte

// ThumbprintOf returns the thumbprint of cert.
func ThumbprintOf(cert *x509.Certificate) Thumbprint { return sha256.Sum256(cert.Raw) }

func (t Thumbprint) String() string { return hex.EncodeToString(t[:]) }

// CertCache remembers certificates by thumbprint so a peer's later messages
// can reference them instead of carrying them. It caches parsed certificates
// only, never verification results: callers still run the Verifier. It is
// bounded (least recently used entries are dropped) and safe for concurrent use.
type CertCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front = most recently used; values are *x509.Certificate
	index map[Thumbprint]*list.Element
}

// NewCertCache returns a cache holding at most max certificates (min 1).
func NewCertCache(max int) *CertCache {
	if max < 1 {
		max = 1
	}
	return &CertCache{max: max, order: list.New(), index: make(map[Thumbprint]*list.Element)}
}

// Add stores cert and returns its thumbprint.
func (c *CertCache) Add(cert *x509.Certificate) Thumbprint {
	tp := ThumbprintOf(cert)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.index[tp]; ok {
		c.order.MoveToFront(e)
		return tp
	}
	c.index[tp] = c.order.PushFront(cert)
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.index, ThumbprintOf(last.Value.(*x509.Certificate)))
	}
	return tp
}

// Get returns the certificate with thumbprint tp.
func (c *CertCache) Get(tp Thumbprint) (*x509.Certificate, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.index[tp]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*x509.Certificate), true
}

// Len returns the number of cached certificates.
func (c *CertCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
