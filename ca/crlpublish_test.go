package ca_test

import (
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/ca/catest"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/clock"
	"github.com/setpay/setpay/pki"
)

// syncBuffer is a log sink the test reads while the code under test writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func crlValidity(crl *x509.RevocationList) time.Duration { return crl.NextUpdate.Sub(crl.ThisUpdate) }

// TestCRLValidityPerCA: without configuration the root's and brand's CRLs are long
// lived (their keys sign rarely) and the issuing CAs' last a day; a configured
// validity per CA replaces the default of that CA only; a validity that is not
// positive, or for a role that is not a CA, is refused.
func TestCRLValidityPerCA(t *testing.T) {
	ctx := context.Background()
	build := func(v ca.CRLValidities) (*ca.Hierarchy, error) {
		return ca.BuildHierarchy(ctx, ca.HierarchyConfig{RootKeys: catest.NewTokenKeys(t), Keys: catest.NewTokenKeys(t),
			Brand: "T", CRLValidityFor: v, Logger: slog.New(slog.DiscardHandler)})
	}
	h, err := build(nil)
	require.NoError(t, err)
	want := map[pki.Role]time.Duration{pki.RoleRoot: 30 * 24 * time.Hour, pki.RoleBrand: 7 * 24 * time.Hour,
		pki.RoleCCA: 24 * time.Hour, pki.RoleMCA: 24 * time.Hour, pki.RolePCA: 24 * time.Hour}
	for _, a := range h.Authorities() {
		crl, err := a.CRL(ctx)
		require.NoError(t, err)
		assert.Equal(t, want[a.Role()], crlValidity(crl), "default %s CRL validity", a.Role())
		assert.Equal(t, ca.DefaultCRLValidityFor(a.Role()), a.CRLValidity())
	}

	h, err = build(ca.CRLValidities{pki.RoleRoot: 90 * 24 * time.Hour, pki.RoleMCA: 2 * time.Hour})
	require.NoError(t, err)
	want[pki.RoleRoot], want[pki.RoleMCA] = 90*24*time.Hour, 2*time.Hour
	for _, a := range h.Authorities() {
		crl, err := a.CRL(ctx)
		require.NoError(t, err)
		assert.Equal(t, want[a.Role()], crlValidity(crl), "configured %s CRL validity", a.Role())
	}

	for _, tc := range []struct {
		name string
		v    ca.CRLValidities
		want string
	}{
		{"zero", ca.CRLValidities{pki.RolePCA: 0}, "pca CRL validity 0s is not positive"},
		{"negative", ca.CRLValidities{pki.RoleBrand: -time.Hour}, "brand CRL validity -1h0m0s is not positive"},
		{"not a CA", ca.CRLValidities{pki.RoleMerchant: time.Hour}, "CRL validity for merchant, which is not a CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.ErrorContains(t, tc.v.Check(), tc.want)
			_, err := build(tc.v)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

// TestPublishCRLsRewritesFilesAtomically: publishing a CA's new CRL replaces its
// <role>.crl and the bundle crls.pem; a reader reading the bundle all the while never
// sees a partial file; an older CRL never replaces a newer one; no temporary file is
// left behind.
func TestPublishCRLsRewritesFilesAtomically(t *testing.T) {
	ctx := context.Background()
	f := catest.New(t)
	dir := t.TempDir()
	require.NoError(t, ca.WriteCRLs(ctx, dir, f.H))
	bundle := filepath.Join(dir, ca.FileCRLs)
	first, err := pki.ReadCRLFile(bundle)
	require.NoError(t, err)
	require.Len(t, first, 5, "one CRL per CA in the bundle")
	old, err := ca.ReadCRL(filepath.Join(dir, "mca.crl"))
	require.NoError(t, err)

	// A reader polls the bundle while the MCA publishes many times.
	stop := make(chan struct{})
	var readerErr error
	reads := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			crls, err := pki.ReadCRLFile(bundle)
			if err == nil && len(crls) != 5 {
				err = assert.AnError
			}
			if err != nil {
				readerErr = err
				return
			}
			reads++
		}
	}()
	for range 30 {
		crl, err := f.H.MCA.CRL(ctx)
		require.NoError(t, err)
		written, err := ca.PublishCRLs(dir, map[pki.Role]*x509.RevocationList{pki.RoleMCA: crl})
		require.NoError(t, err)
		assert.Equal(t, []pki.Role{pki.RoleMCA}, written)
	}
	close(stop)
	wg.Wait()
	require.NoError(t, readerErr, "the reader saw a partial bundle after %d reads", reads)

	// A revocation reaches both files.
	cert := issueMerchant(t, f.Keys.Token, f.H.MCA, "shop-pub")
	require.NoError(t, f.H.MCA.Revoke(ctx, cert.SerialNumber, ca.RevokeKeyCompromise))
	crl, err := f.H.MCA.CRL(ctx)
	require.NoError(t, err)
	_, err = ca.PublishCRLs(dir, map[pki.Role]*x509.RevocationList{pki.RoleMCA: crl})
	require.NoError(t, err)
	for _, p := range []string{filepath.Join(dir, "mca.crl"), bundle} {
		crls, err := pki.ReadCRLFile(p)
		require.NoError(t, err)
		listed := false
		for _, c := range crls {
			for _, e := range c.RevokedCertificateEntries {
				listed = listed || e.SerialNumber.Cmp(cert.SerialNumber) == 0
			}
		}
		assert.True(t, listed, "%s lists the revoked serial", p)
	}

	// An older CRL (a lagging publisher) does not replace the newer one.
	written, err := ca.PublishCRLs(dir, map[pki.Role]*x509.RevocationList{pki.RoleMCA: old})
	require.NoError(t, err)
	assert.Empty(t, written)
	now, err := ca.ReadCRL(filepath.Join(dir, "mca.crl"))
	require.NoError(t, err)
	assert.Equal(t, 0, now.Number.Cmp(crl.Number))

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.NotContains(t, e.Name(), ".tmp", "temporary file left behind")
	}
}

// offlineCA is a CA as `ca serve` runs it: the root key offline (its CRL from
// root.crl), the other CAs online, all on a manual clock, with a CRL publisher on the
// CA directory.
type offlineCA struct {
	clk  *clock.Manual
	h    *ca.Hierarchy // with the root, which the test uses as `ca crl --issuer root` would
	dir  string
	srv  *ca.Server
	pub  *ca.CRLPublisher
	logs *syncBuffer
	keys *catest.TokenKeys
}

func newOfflineCA(t *testing.T) *offlineCA {
	t.Helper()
	ctx := context.Background()
	o := &offlineCA{clk: clock.NewManual(time.Now().UTC().Truncate(time.Second)), dir: t.TempDir(), logs: &syncBuffer{}}
	keys := catest.NewTokenKeys(t)
	log := slog.New(slog.NewTextHandler(o.logs, nil))
	var err error
	o.h, err = ca.BuildHierarchy(ctx, ca.HierarchyConfig{RootKeys: catest.NewTokenKeys(t), Keys: keys, Brand: "T", Org: "T",
		Clock: o.clk.Now, Logger: log})
	require.NoError(t, err)
	require.NoError(t, ca.WriteCRLs(ctx, o.dir, o.h))
	rootCRL, err := ca.ReadCRL(filepath.Join(o.dir, "root.crl"))
	require.NoError(t, err)

	kx, err := keys.Token.GenerateKey(ctx, hsm.KeySpec{Label: "setpay-cca-kx", Algorithm: hsm.RSA2048, Usage: hsm.UsageKeyExchange})
	require.NoError(t, err)
	kxCert, err := o.h.Brand.IssueCAKeyExchange(ctx, o.h.CCA.Certificate(), kx.Public(), 0)
	require.NoError(t, err)
	ledger, err := ca.NewCardLedger([]ca.LedgerCard{{PAN: cardOK, Expiry: cardExpiry, PostalCode: postalCode}})
	require.NoError(t, err)
	online := &ca.Hierarchy{Brand: o.h.Brand, CCA: o.h.CCA, MCA: o.h.MCA, PCA: o.h.PCA}
	o.srv, err = ca.NewServer(ca.ServerConfig{Hierarchy: online, RootCRL: rootCRL, RootCRLFile: filepath.Join(o.dir, "root.crl"),
		CCASigner: keys.Signer("setpay-cca"), CCAKeyExchange: kxCert, CCADecrypter: kx, Ledger: ledger, Clock: o.clk.Now, Logger: log})
	require.NoError(t, err)
	o.pub, err = ca.NewCRLPublisher(ca.CRLPublisherConfig{Dir: o.dir, Server: o.srv, Clock: o.clk.Now, Logger: log})
	require.NoError(t, err)
	o.keys = keys
	return o
}

// issueMerchant issues a merchant's signature certificate with token keys.
func issueMerchant(t *testing.T, tok *hsm.Token, mca *ca.Authority, id string) *x509.Certificate {
	t.Helper()
	ctx := context.Background()
	secret, err := mca.Enroll(ctx, pki.RoleMerchant, id)
	require.NoError(t, err)
	sig, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: id + "-sig", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	kx, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: id + "-kx", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	require.NoError(t, err)
	certs, err := mca.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleMerchant, ID: id, Secret: secret,
		SignatureCSR: catest.CSR(t, sig, id), KeyExchangeCSR: catest.CSR(t, kx, id)})
	require.NoError(t, err)
	return certs.Signature
}

// serverCRLs is the CA service's GetCRL as a refresher source, without the network.
type serverCRLs struct{ s *ca.Server }

func (s serverCRLs) FetchCRLs(ctx context.Context) ([]*x509.RevocationList, error) {
	var out []*x509.RevocationList
	for _, r := range []pki.Role{pki.RoleRoot, pki.RoleBrand, pki.RoleCCA, pki.RoleMCA, pki.RolePCA} {
		crl, err := s.s.CurrentCRL(ctx, r)
		if err != nil {
			return out, err
		}
		out = append(out, crl)
	}
	return out, nil
}

func (serverCRLs) String() string { return "CA server" }

// TestSystemLeftAloneForDaysKeepsWorking: a CA service running for three days with
// nobody touching it re-signs every online CA's CRL before it expires and keeps the
// files current; a service refreshing from the files, and one refreshing from
// GetCRL, accept a merchant all along and refuse it from the first refresh after
// its revocation. The offline root's CRL is announced in the log from half its
// validity on and, once expired, the whole hierarchy is refused until the root
// signs a new one (`ca crl --issuer root`), which the running CA then serves.
func TestSystemLeftAloneForDaysKeepsWorking(t *testing.T) {
	ctx := context.Background()
	o := newOfflineCA(t)
	require.NoError(t, o.pub.Publish(ctx))
	merchant := issueMerchant(t, o.keys.Token, o.h.MCA, "shop-days")
	inter := []*x509.Certificate{o.h.MCA.Certificate(), o.h.Brand.Certificate()}
	want := pki.Expect{Role: pki.RoleMerchant, Purpose: pki.PurposeSignature}

	type service struct {
		name string
		r    *pki.CRLRefresher
		v    *pki.Verifier
	}
	var services []service
	for _, src := range []pki.CRLFetcher{pki.CRLFiles{filepath.Join(o.dir, ca.FileCRLs)}, serverCRLs{o.srv}} {
		crls := pki.NewMemoryCRLs()
		var cas []*x509.Certificate
		for _, a := range o.h.Authorities() {
			cas = append(cas, a.Certificate())
		}
		r, err := pki.NewCRLRefresher(pki.CRLRefresherConfig{Into: crls, Issuers: cas, Sources: []pki.CRLFetcher{src}, Now: o.clk.Now})
		require.NoError(t, err)
		v, err := pki.NewVerifier(o.h.Root.Certificate(), crls)
		require.NoError(t, err)
		services = append(services, service{src.String(), r, v})
	}
	step := func() {
		require.NoError(t, o.pub.Publish(ctx))
		for _, s := range services {
			require.NoError(t, s.r.Refresh(ctx), s.name)
		}
	}
	firstMCA, err := ca.ReadCRL(filepath.Join(o.dir, "mca.crl"))
	require.NoError(t, err)

	// Three days, an hour at a time (the CA checks every minute; an hour is enough
	// with 24 h CRLs re-signed after 12 h).
	for h := 1; h <= 72; h++ {
		o.clk.Add(time.Hour)
		step()
		for _, s := range services {
			_, err := s.v.Verify(ctx, merchant, inter, want, o.clk.Now())
			require.NoError(t, err, "%s, hour %d", s.name, h)
		}
	}
	for _, r := range []pki.Role{pki.RoleBrand, pki.RoleCCA, pki.RoleMCA, pki.RolePCA} {
		crl, err := ca.ReadCRL(filepath.Join(o.dir, ca.CRLFileName(r)))
		require.NoError(t, err)
		assert.True(t, crl.NextUpdate.After(o.clk.Now()), "%s CRL file is current after three days", r)
	}
	mca, err := ca.ReadCRL(filepath.Join(o.dir, "mca.crl"))
	require.NoError(t, err)
	assert.Equal(t, 1, mca.Number.Cmp(firstMCA.Number), "the MCA's CRL was re-signed")
	for _, st := range o.pub.State() {
		assert.Equal(t, st.Role != pki.RoleRoot, st.Online, "%s", st.Role)
		assert.True(t, st.NextUpdate.After(o.clk.Now()), "%s", st.Role)
	}
	assert.NotContains(t, o.logs.String(), "key is offline", "the root CRL is far from expiry yet")

	// A revocation after three days reaches both services at their next refresh.
	require.NoError(t, o.h.MCA.Revoke(ctx, merchant.SerialNumber, ca.RevokeKeyCompromise))
	step()
	for _, s := range services {
		_, err := s.v.Verify(ctx, merchant, inter, want, o.clk.Now())
		assert.ErrorIs(t, err, pki.ReasonRevoked, s.name)
	}

	// Past half the root CRL's 30 days the log says when it will expire.
	other := issueMerchant(t, o.keys.Token, o.h.MCA, "shop-later")
	o.clk.Add(13 * 24 * time.Hour)
	step()
	assert.Contains(t, o.logs.String(), "CRL will expire and cannot be re-signed here: the root key is offline")
	for _, s := range services {
		_, err := s.v.Verify(ctx, other, inter, want, o.clk.Now())
		require.NoError(t, err, "%s: day 16", s.name)
	}
	// Past its nextUpdate: an error in the log, and the services refuse.
	o.clk.Add(15 * 24 * time.Hour)
	step()
	assert.Contains(t, o.logs.String(), "CRL expired and cannot be re-signed here: the root key is offline")
	for _, s := range services {
		_, err := s.v.Verify(ctx, other, inter, want, o.clk.Now())
		assert.ErrorIs(t, err, pki.ReasonCRLUnavailable, "%s: root CRL expired", s.name)
	}
	// The root signs a new CRL into the CA directory (`ca crl --issuer root`): the
	// running CA serves it and rewrites the bundle; both services accept again.
	rootCRL, err := o.h.Root.CRL(ctx)
	require.NoError(t, err)
	_, err = ca.PublishCRLs(o.dir, map[pki.Role]*x509.RevocationList{pki.RoleRoot: rootCRL})
	require.NoError(t, err)
	step()
	served, err := o.srv.CurrentCRL(ctx, pki.RoleRoot)
	require.NoError(t, err)
	assert.Equal(t, 0, served.Number.Cmp(rootCRL.Number), "GetCRL serves the new root CRL without a restart")
	for _, s := range services {
		_, err := s.v.Verify(ctx, other, inter, want, o.clk.Now())
		assert.NoError(t, err, "%s: after the new root CRL", s.name)
	}
}
