// Package signer is the signing service the CA, the gateway and the merchants use: keys
// in PKCS#11 tokens named by role, used in-process as crypto.Signer/crypto.Decrypter or
// remotely over gRPC with mutual TLS, where each client may use only the keys it is
// granted.
package signer

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// ErrUnknownKey reports a key name the service does not hold.
var ErrUnknownKey = errors.New("unknown key")

// Key is what the service needs of a key: a crypto.Signer, optionally a
// crypto.Decrypter. *hsm.Key is one; so is a remote key from Client.
type Key interface {
	crypto.Signer
}

// ContextSigner is a Key that bounds its wait for the token with a context.
type ContextSigner interface {
	SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

// ContextDecrypter is a Key that decrypts with a context.
type ContextDecrypter interface {
	DecryptContext(ctx context.Context, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error)
}

// Describer is implemented by token keys so ListKeys can say what they are.
type Describer interface {
	URI() string
}

// Entry is one named key.
type Entry struct {
	Name        string
	Key         Key
	Algorithm   string
	Usage       string
	Certificate *x509.Certificate // optional
}

// Service holds named keys. It is safe for concurrent use; keys are added at start-up.
type Service struct {
	mu   sync.RWMutex
	keys map[string]*Entry
}

// NewService returns an empty service.
func NewService() *Service { return &Service{keys: map[string]*Entry{}} }

// Add names a key. Names are roles ("gateway-sign", "ca-pca"), stable across key rotation.
func (s *Service) Add(e Entry) error {
	if e.Name == "" || e.Key == nil {
		return errors.New("signer: a key needs a name and a key")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[e.Name]; ok {
		return fmt.Errorf("signer: key %q already added", e.Name)
	}
	s.keys[e.Name] = &e
	return nil
}

// Entry returns the named key.
func (s *Service) Entry(name string) (*Entry, error) {
	s.mu.RLock()
	e, ok := s.keys[name]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("signer: key %q: %w", name, ErrUnknownKey)
	}
	return e, nil
}

// Names lists the key names, sorted.
func (s *Service) Names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.keys))
	for n := range s.keys {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Signer returns the named key as a crypto.Signer.
func (s *Service) Signer(name string) (crypto.Signer, error) {
	e, err := s.Entry(name)
	if err != nil {
		return nil, err
	}
	return e.Key, nil
}

// Decrypter returns the named key as a crypto.Decrypter.
func (s *Service) Decrypter(name string) (crypto.Decrypter, error) {
	e, err := s.Entry(name)
	if err != nil {
		return nil, err
	}
	d, ok := e.Key.(crypto.Decrypter)
	if !ok {
		return nil, fmt.Errorf("signer: key %q cannot decrypt", name)
	}
	return d, nil
}

// Sign signs with the named key, passing ctx down when the key takes one.
func (s *Service) Sign(ctx context.Context, name string, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	e, err := s.Entry(name)
	if err != nil {
		return nil, err
	}
	return signWith(ctx, e.Key, digest, opts)
}

func signWith(ctx context.Context, k Key, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if cs, ok := k.(ContextSigner); ok {
		return cs.SignContext(ctx, digest, opts)
	}
	return k.Sign(rand.Reader, digest, opts)
}

// Decrypt decrypts with the named key.
func (s *Service) Decrypt(ctx context.Context, name string, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	e, err := s.Entry(name)
	if err != nil {
		return nil, err
	}
	if cd, ok := e.Key.(ContextDecrypter); ok {
		return cd.DecryptContext(ctx, ciphertext, opts)
	}
	d, ok := e.Key.(crypto.Decrypter)
	if !ok {
		return nil, fmt.Errorf("signer: key %q cannot decrypt", name)
	}
	return d.Decrypt(rand.Reader, ciphertext, opts)
}

// ECDHKey is a key-exchange key that agrees keys by ECDH inside its token.
type ECDHKey interface {
	ECDH(ctx context.Context, peer *ecdh.PublicKey) ([]byte, error)
}

// ECDH agrees a shared secret with peer using the named EC key-exchange key.
func (s *Service) ECDH(ctx context.Context, name string, peer *ecdh.PublicKey) ([]byte, error) {
	e, err := s.Entry(name)
	if err != nil {
		return nil, err
	}
	k, ok := e.Key.(ECDHKey)
	if !ok {
		return nil, fmt.Errorf("signer: key %q cannot do ECDH", name)
	}
	return k.ECDH(ctx, peer)
}
