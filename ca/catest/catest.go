// Package catest builds a real SET CA hierarchy on SoftHSM tokens for tests
// of this and other packages. The test binary must call
// softhsmtest.Main from TestMain.
package catest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

// TokenKeys is a ca.KeyGenerator over an hsm.Token that remembers the
// signers it created, so tests can misuse a CA key on purpose (forgeries).
type TokenKeys struct {
	Token *hsm.Token
	mu    sync.Mutex
	keys  map[string]crypto.Signer
}

// NewTokenKeys wraps a fresh SoftHSM token.
func NewTokenKeys(t testing.TB) *TokenKeys {
	return &TokenKeys{Token: softhsmtest.NewToken(t), keys: map[string]crypto.Signer{}}
}

// GenerateKey implements ca.KeyGenerator with signing-only token keys.
func (k *TokenKeys) GenerateKey(ctx context.Context, label, alg string) (crypto.Signer, error) {
	key, err := ca.TokenKeyGenerator{Token: k.Token}.GenerateKey(ctx, label, alg)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys[label] = key
	return key, nil
}

// Signer returns a key generated earlier under label.
func (k *TokenKeys) Signer(label string) crypto.Signer {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[label]
}

// Fixture is a complete hierarchy with its CRLs and a verifier.
type Fixture struct {
	H        *ca.Hierarchy
	RootKeys *TokenKeys // token of the root key
	Keys     *TokenKeys // token of brand, CCA, MCA, PCA keys and of end-entity keys made by Key
	CRLs     *pki.MemoryCRLs
	Verifier *pki.Verifier
	n        sync.Mutex
	seq      int
}

// New builds root (own token) -> brand -> CCA/MCA/PCA with ECDSA P-256 keys,
// publishes a first CRL for every CA and returns a verifier for the root.
func New(t testing.TB) *Fixture {
	t.Helper()
	f := &Fixture{RootKeys: NewTokenKeys(t), Keys: NewTokenKeys(t), CRLs: pki.NewMemoryCRLs()}
	h, err := ca.BuildHierarchy(context.Background(), ca.HierarchyConfig{
		RootKeys: f.RootKeys, Keys: f.Keys, Org: "SETPay Test", Brand: "SETPay Test",
		Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	f.H = h
	f.PublishCRLs(t)
	f.Verifier, err = pki.NewVerifier(h.Root.Certificate(), f.CRLs)
	require.NoError(t, err)
	return f
}

// PublishCRLs signs a fresh CRL on every CA and stores it in f.CRLs.
func (f *Fixture) PublishCRLs(t testing.TB) {
	t.Helper()
	for _, a := range f.H.Authorities() {
		crl, err := a.CRL(context.Background())
		require.NoError(t, err)
		require.NoError(t, f.CRLs.Put(crl))
	}
}

// Key generates an end-entity key in the Keys token (usage sign or keyexchange).
func (f *Fixture) Key(t testing.TB, alg string, usage hsm.Usage) *hsm.Key {
	t.Helper()
	a, err := ca.TokenAlgorithm(alg)
	require.NoError(t, err)
	f.n.Lock()
	f.seq++
	label := fmt.Sprintf("ee-%d", f.seq)
	f.n.Unlock()
	k, err := f.Keys.Token.GenerateKey(context.Background(), hsm.KeySpec{Label: label, Algorithm: a, Usage: usage})
	require.NoError(t, err)
	return k
}

// CSR returns a PKCS#10 request signed by key.
func CSR(t testing.TB, key crypto.Signer, cn string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	require.NoError(t, err)
	return der
}

// Intermediates returns the brand and issuing CA certificate for role's issuer.
func (f *Fixture) Intermediates(role pki.Role) []*x509.Certificate {
	a := f.H.Issuing(role)
	if a == nil {
		return nil
	}
	return []*x509.Certificate{a.Certificate(), f.H.Brand.Certificate()}
}

// Verify runs the fixture's verifier at the current time.
func (f *Fixture) Verify(leaf *x509.Certificate, want pki.Expect) ([]*x509.Certificate, error) {
	r, _ := pki.RoleOf(leaf)
	return f.Verifier.Verify(context.Background(), leaf, f.Intermediates(r), want, time.Now())
}
