package pki_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca/catest"
	"github.com/setpay/setpay/pki"
)

// crlBundle writes the current CRL of every CA of f's hierarchy to one PEM file, as
// `ca crl` / the CA service publish them.
func crlBundle(t *testing.T, f *catest.Fixture, path string) {
	t.Helper()
	var out []byte
	for _, a := range f.H.Authorities() {
		crl, err := a.CRL(context.Background())
		require.NoError(t, err)
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw})...)
	}
	require.NoError(t, os.WriteFile(path+".tmp", out, 0o644))
	require.NoError(t, os.Rename(path+".tmp", path)) // as a publisher must: never a half-written file
}

func issuers(f *catest.Fixture) []*x509.Certificate {
	var out []*x509.Certificate
	for _, a := range f.H.Authorities() {
		out = append(out, a.Certificate())
	}
	return out
}

// TestRevocationReachesARunningVerifier is issue 11's finding 7: a service that
// loaded CRLs at start never saw a revocation. With a refresher, the next refresh
// after the CA publishes makes the same verifier refuse the revoked merchant.
func TestRevocationReachesARunningVerifier(t *testing.T) {
	ctx := context.Background()
	f := catest.New(t)
	m := enroll(t, f, pki.RoleMerchant, "shop-1")
	want := pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature}
	bundle := filepath.Join(t.TempDir(), "crls.pem")
	crlBundle(t, f, bundle)

	crls := pki.NewMemoryCRLs()
	r, err := pki.NewCRLRefresher(pki.CRLRefresherConfig{Into: crls, Issuers: issuers(f), Sources: []pki.CRLFetcher{pki.CRLFiles{bundle}}})
	require.NoError(t, err)
	require.NoError(t, r.Refresh(ctx))
	v, err := pki.NewVerifier(f.H.Root.Certificate(), crls)
	require.NoError(t, err)
	_, err = v.Verify(ctx, m.sig, f.Intermediates(pki.RoleMerchant), want, time.Now())
	require.NoError(t, err, "the merchant is good before the revocation")

	require.NoError(t, f.H.MCA.Revoke(ctx, m.sig.SerialNumber, 1))
	crlBundle(t, f, bundle)
	_, err = v.Verify(ctx, m.sig, f.Intermediates(pki.RoleMerchant), want, time.Now())
	require.NoError(t, err, "until the refresh the held CRL (and the chain cache) still say good")

	require.NoError(t, r.Refresh(ctx))
	_, err = v.Verify(ctx, m.sig, f.Intermediates(pki.RoleMerchant), want, time.Now())
	assert.ErrorIs(t, err, pki.ReasonRevoked)
}

type fetchFunc struct {
	name string
	fn   func() ([]*x509.RevocationList, error)
}

func (f fetchFunc) FetchCRLs(context.Context) ([]*x509.RevocationList, error) { return f.fn() }
func (f fetchFunc) String() string                                            { return f.name }

func TestCRLRefresherRefusesAndKeeps(t *testing.T) {
	ctx := context.Background()
	f := catest.New(t)
	other := catest.New(t)
	mcaOld, err := f.H.MCA.CRL(ctx)
	require.NoError(t, err)
	mcaNew, err := f.H.MCA.CRL(ctx)
	require.NoError(t, err)
	// A CRL in our MCA's name and key id with a higher number, signed by another key.
	fakeIssuer := *f.H.MCA.Certificate()
	fakeIssuer.PublicKey = other.H.MCA.Certificate().PublicKey
	forgedDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1 << 40), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour),
	}, &fakeIssuer, other.Keys.Signer("setpay-mca"))
	require.NoError(t, err)
	forged, err := x509.ParseRevocationList(forgedDER)
	require.NoError(t, err)
	foreign, err := other.H.MCA.CRL(ctx)
	require.NoError(t, err)

	tests := []struct {
		name     string
		offered  []*x509.RevocationList
		fetchErr error
		wantErr  string
		held     *x509.RevocationList // the MCA CRL held afterwards
	}{
		{"newer replaces older", []*x509.RevocationList{mcaNew}, nil, "", mcaNew},
		{"a lagging source's older CRL is ignored", []*x509.RevocationList{mcaOld}, nil, "", mcaOld},
		{"forged signature refused, held kept", []*x509.RevocationList{forged}, nil, "signature", mcaOld},
		{"another hierarchy's CA refused", []*x509.RevocationList{foreign}, nil, "none of this service's CAs", mcaOld},
		{"source down: held kept", nil, errors.New("connection refused"), "connection refused", mcaOld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crls := pki.NewMemoryCRLs()
			require.NoError(t, crls.Put(mcaOld))
			if tt.name == "a lagging source's older CRL is ignored" {
				crls = pki.NewMemoryCRLs()
				require.NoError(t, crls.Put(mcaNew))
				tt.held = mcaNew
			}
			src := fetchFunc{"test source", func() ([]*x509.RevocationList, error) { return tt.offered, tt.fetchErr }}
			r, err := pki.NewCRLRefresher(pki.CRLRefresherConfig{Into: crls, Issuers: issuers(f), Sources: []pki.CRLFetcher{src}})
			require.NoError(t, err)
			err = r.Refresh(ctx)
			if tt.wantErr == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tt.wantErr)
				assert.ErrorContains(t, err, "test source", "the error names the source")
			}
			held, err := crls.CRL(ctx, f.H.MCA.Certificate())
			require.NoError(t, err)
			assert.Equal(t, tt.held.Number, held.Number)
			_, lastErr := r.LastFetch()
			assert.Equal(t, tt.wantErr != "", lastErr != nil)
		})
	}
}

func TestCRLRefresherSameNumberOtherContents(t *testing.T) {
	ctx := context.Background()
	f := catest.New(t)
	crl, err := f.H.MCA.CRL(ctx)
	require.NoError(t, err)
	// The same number re-signed with other contents: a CA bug or a replayed key.
	twin, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: crl.Number, ThisUpdate: crl.ThisUpdate.Add(time.Second), NextUpdate: crl.NextUpdate,
	}, f.H.MCA.Certificate(), f.Keys.Signer("setpay-mca"))
	require.NoError(t, err)
	twinCRL, err := x509.ParseRevocationList(twin)
	require.NoError(t, err)
	crls := pki.NewMemoryCRLs()
	require.NoError(t, crls.Put(crl))
	src := fetchFunc{"twin", func() ([]*x509.RevocationList, error) { return []*x509.RevocationList{crl, twinCRL}, nil }}
	r, err := pki.NewCRLRefresher(pki.CRLRefresherConfig{Into: crls, Issuers: issuers(f), Sources: []pki.CRLFetcher{src}})
	require.NoError(t, err)
	assert.ErrorContains(t, r.Refresh(ctx), "signed twice with different contents")
	held, err := crls.CRL(ctx, f.H.MCA.Certificate())
	require.NoError(t, err)
	assert.Equal(t, crl.Raw, held.Raw, "the first one stays")
}

func TestCRLRefresherRunAndTrigger(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := catest.New(t)
	first, err := f.H.MCA.CRL(ctx)
	require.NoError(t, err)
	second, err := f.H.MCA.CRL(ctx)
	require.NoError(t, err)
	var calls atomic.Int64
	var serve atomic.Pointer[x509.RevocationList]
	serve.Store(first)
	src := fetchFunc{"ca", func() ([]*x509.RevocationList, error) {
		calls.Add(1)
		return []*x509.RevocationList{serve.Load()}, nil
	}}
	crls := pki.NewMemoryCRLs()
	// An hour between refreshes: only the start and the triggers fetch in this test.
	r, err := pki.NewCRLRefresher(pki.CRLRefresherConfig{Into: crls, Issuers: issuers(f), Sources: []pki.CRLFetcher{src}, Interval: time.Hour})
	require.NoError(t, err)
	require.NoError(t, r.Refresh(ctx), "the service's own first load")
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	heldNumber := func() *big.Int {
		c, err := crls.CRL(ctx, f.H.MCA.Certificate())
		if err != nil {
			return nil
		}
		return c.Number
	}
	require.Eventually(t, func() bool { return heldNumber() != nil && heldNumber().Cmp(first.Number) == 0 }, 10*time.Second, 5*time.Millisecond, "the first load")

	serve.Store(second)
	r.Trigger() // what SIGHUP does
	require.Eventually(t, func() bool { return heldNumber().Cmp(second.Number) == 0 }, 10*time.Second, 5*time.Millisecond, "a trigger refreshes")

	var mca pki.CRLStatus
	for _, s := range r.Status() {
		if s.Issuer == f.H.MCA.Certificate().Subject.String() {
			mca = s
		}
	}
	assert.Equal(t, second.Number.String(), mca.Number)
	assert.Equal(t, second.NextUpdate, mca.NextUpdate)
	assert.False(t, mca.LastChange.IsZero())
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	assert.Equal(t, int64(2), calls.Load(), "the first load and one per trigger, none by the hourly ticker")
}

func TestCRLRefresherConfig(t *testing.T) {
	f := catest.New(t)
	leaf := enroll(t, f, pki.RoleMerchant, "shop-9").sig
	good := pki.CRLRefresherConfig{Into: pki.NewMemoryCRLs(), Issuers: issuers(f), Sources: []pki.CRLFetcher{pki.CRLFiles{"x"}}}
	tests := []struct {
		name   string
		mutate func(*pki.CRLRefresherConfig)
		want   []string
	}{
		{"good", func(*pki.CRLRefresherConfig) {}, nil},
		{"nothing", func(c *pki.CRLRefresherConfig) { *c = pki.CRLRefresherConfig{} }, []string{"into:", "issuers:", "sources:"}},
		{"leaf as issuer", func(c *pki.CRLRefresherConfig) { c.Issuers = []*x509.Certificate{leaf} }, []string{"issuers[0]: not a CA"}},
		{"negative interval", func(c *pki.CRLRefresherConfig) { c.Interval = -time.Second }, []string{"interval:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			r, err := pki.NewCRLRefresher(c)
			if tt.want == nil {
				require.NoError(t, err)
				assert.Equal(t, pki.DefaultCRLRefresh, r.Interval())
				return
			}
			for _, w := range tt.want {
				assert.ErrorContains(t, err, w)
			}
		})
	}
}

func TestReadCRLFile(t *testing.T) {
	dir := t.TempDir()
	noCRL := filepath.Join(dir, "certs.pem")
	require.NoError(t, os.WriteFile(noCRL, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), 0o644))
	garbage := filepath.Join(dir, "bad.pem")
	require.NoError(t, os.WriteFile(garbage, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{1, 2, 3}}), 0o644))
	tests := []struct{ name, path, want string }{
		{"missing file", filepath.Join(dir, "nope.pem"), "no such file"},
		{"no CRL in it", noCRL, "holds no PEM"},
		{"unparseable CRL", garbage, "CRL 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pki.ReadCRLFile(tt.path)
			assert.ErrorContains(t, err, tt.want)
		})
	}
}

// TestMemoryCRLsPut: a newer CRL replaces the held one; the very CRL held, offered
// again (a file read again unchanged), is no error; an older one, or the same number
// with other contents, is refused and the held CRL kept.
func TestMemoryCRLsPut(t *testing.T) {
	ctx := context.Background()
	f := catest.New(t)
	older, err := f.H.MCA.CRL(ctx)
	require.NoError(t, err)
	held, err := f.H.MCA.CRL(ctx)
	require.NoError(t, err)
	twinDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: held.Number, ThisUpdate: held.ThisUpdate.Add(time.Second), NextUpdate: held.NextUpdate,
	}, f.H.MCA.Certificate(), f.Keys.Signer("setpay-mca"))
	require.NoError(t, err)
	twin, err := x509.ParseRevocationList(twinDER)
	require.NoError(t, err)
	newer, err := f.H.MCA.CRL(ctx)
	require.NoError(t, err)

	for _, tc := range []struct {
		name    string
		offered *x509.RevocationList
		wantErr string
		want    *x509.RevocationList
	}{
		{"the held CRL again", held, "", held},
		{"an older CRL", older, "not above held", held},
		{"the same number, other contents", twin, "not above held", held},
		{"a newer CRL", newer, "", newer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			crls := pki.NewMemoryCRLs()
			require.NoError(t, crls.Put(held))
			err := crls.Put(tc.offered)
			if tc.wantErr == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tc.wantErr)
			}
			got, err := crls.CRL(ctx, f.H.MCA.Certificate())
			require.NoError(t, err)
			assert.Equal(t, tc.want.Raw, got.Raw)
		})
	}
}
