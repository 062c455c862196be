package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"math/big"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/ca/catest"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/testenv"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/store"
)

// dbBackends yields a DSN opener per engine: SQLite always, PostgreSQL when
// SETPAY_TEST_PG_DSN is set.
func dbBackends(t *testing.T) map[string]func(t *testing.T) (dsn string) {
	return map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "setpay.db") },
		"postgres": func(t *testing.T) string { return testenv.PostgresSchema(t) },
	}
}

func uniqueIssuer(t testing.TB) string {
	var b [6]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return "t" + hex.EncodeToString(b[:])
}

func openDB(t testing.TB, dsn string) *store.Store {
	db, err := store.Open(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func hashOf(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

// TestDBStoreSurvivesRestart checks the Store contract on the durable store,
// reopening the database between writes and reads.
func TestDBStoreSurvivesRestart(t *testing.T) {
	for name, dsnFor := range dbBackends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dsn := dsnFor(t)
			issuer := uniqueIssuer(t)
			now := time.Now().UTC().Truncate(time.Microsecond)

			db1, err := store.Open(ctx, dsn)
			require.NoError(t, err)
			s1, err := ca.NewDBStore(db1, issuer)
			require.NoError(t, err)
			serial := big.NewInt(0xabcdef)
			require.NoError(t, s1.PutIssued(ctx, ca.IssuedCert{Serial: serial, DER: selfSignedDER(t), Role: pki.RoleMerchant,
				Purpose: pki.PurposeSignature, SubjectID: "m1", IssuedAt: now, NotAfter: now.Add(time.Hour)}))
			n1, err := s1.NextCRLNumber(ctx)
			require.NoError(t, err)
			require.NoError(t, s1.Revoke(ctx, serial, ca.RevokeKeyCompromise, now))
			assert.ErrorIs(t, s1.Revoke(ctx, serial, ca.RevokeKeyCompromise, now), ca.ErrAlreadyRevoked)
			assert.ErrorIs(t, s1.Revoke(ctx, big.NewInt(99), 1, now), ca.ErrNotFound)
			require.NoError(t, s1.PutEnrollment(ctx, ca.Enrollment{Role: pki.RoleMerchant, ID: "m1", SecretHash: hashOf("old"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}))
			require.NoError(t, s1.PutEnrollment(ctx, ca.Enrollment{Role: pki.RoleMerchant, ID: "m1", SecretHash: hashOf("new"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}))
			require.NoError(t, s1.PutEnrollment(ctx, ca.Enrollment{Role: pki.RoleGateway, ID: "g1", SecretHash: hashOf("late"), CreatedAt: now, ExpiresAt: now.Add(time.Minute)}))
			require.NoError(t, db1.Close())

			s2, err := ca.NewDBStore(openDB(t, dsn), issuer)
			require.NoError(t, err)
			rec, err := s2.GetIssued(ctx, serial)
			require.NoError(t, err)
			assert.Equal(t, pki.RoleMerchant, rec.Role)
			assert.Equal(t, "m1", rec.SubjectID)
			assert.True(t, rec.Revoked)
			assert.Equal(t, ca.RevokeKeyCompromise, rec.RevocationReason)
			_, err = s2.GetIssued(ctx, big.NewInt(5))
			assert.ErrorIs(t, err, ca.ErrNotFound)

			revs, err := s2.Revocations(ctx)
			require.NoError(t, err)
			require.Len(t, revs, 1)
			assert.Equal(t, 0, revs[0].SerialNumber.Cmp(serial))
			n2, err := s2.NextCRLNumber(ctx)
			require.NoError(t, err)
			assert.Equal(t, 1, n2.Cmp(n1), "CRL numbers keep growing across restarts")

			// The replaced secret is dead, the newest one works once.
			_, err = s2.RedeemEnrollment(ctx, pki.RoleMerchant, "m1", hashOf("old"), now)
			assert.ErrorIs(t, err, ca.ErrNotFound)
			_, err = s2.RedeemEnrollment(ctx, pki.RoleMerchant, "m1", hashOf("wrong"), now)
			assert.ErrorIs(t, err, ca.ErrNotFound)
			_, err = s2.RedeemEnrollment(ctx, pki.RoleGateway, "m1", hashOf("new"), now)
			assert.ErrorIs(t, err, ca.ErrNotFound, "bound to the role")
			e, err := s2.RedeemEnrollment(ctx, pki.RoleMerchant, "m1", hashOf("new"), now)
			require.NoError(t, err)
			assert.False(t, e.UsedAt.IsZero())
			_, err = s2.RedeemEnrollment(ctx, pki.RoleMerchant, "m1", hashOf("new"), now)
			assert.ErrorIs(t, err, ca.ErrAlreadyUsed)
			// Expired: returned for the caller to judge, and not consumed.
			e, err = s2.RedeemEnrollment(ctx, pki.RoleGateway, "g1", hashOf("late"), now.Add(2*time.Minute))
			require.NoError(t, err)
			assert.False(t, now.Add(2*time.Minute).Before(e.ExpiresAt))
		})
	}
}

func TestNewDBStoreRejectsBadNames(t *testing.T) {
	db := openDB(t, "sqlite:"+filepath.Join(t.TempDir(), "x.db"))
	for _, n := range []string{"", "a/b", "a#b", "a b", string(make([]byte, 65))} {
		_, err := ca.NewDBStore(db, n)
		assert.Error(t, err, "%q", n)
	}
	_, err := ca.NewDBStore(nil, "cca")
	assert.Error(t, err)
}

// TestDBStoreRedeemOnce races redemptions of one secret: exactly one wins.
func TestDBStoreRedeemOnce(t *testing.T) {
	for name, dsnFor := range dbBackends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s, err := ca.NewDBStore(openDB(t, dsnFor(t)), uniqueIssuer(t))
			require.NoError(t, err)
			now := time.Now()
			require.NoError(t, s.PutEnrollment(ctx, ca.Enrollment{Role: pki.RoleGateway, ID: "g", SecretHash: hashOf("s"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}))
			const n = 8
			errs := make(chan error, n)
			for range n {
				go func() {
					_, err := s.RedeemEnrollment(ctx, pki.RoleGateway, "g", hashOf("s"), now)
					errs <- err
				}()
			}
			wins := 0
			for range n {
				err := <-errs
				if err == nil {
					wins++
					continue
				}
				assert.ErrorIs(t, err, ca.ErrAlreadyUsed)
			}
			assert.Equal(t, 1, wins)
		})
	}
}

// selfSignedDER is a real certificate (PutIssued reads its public key).
func selfSignedDER(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	return der
}

// TestKeyUnicity: a public key is certified once across every CA of a hierarchy
// whose stores share one database, in every role, under concurrency and across a
// restart (formal analysis of SET registration: key unicity). A CA key cannot be
// certified again as a cardholder's either.
func TestKeyUnicity(t *testing.T) {
	for name, dsnFor := range dbBackends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dsn := dsnFor(t)
			db := openDB(t, dsn)
			prefix := uniqueIssuer(t)
			newStore := func(db store.DB) func(pki.Role) ca.Store {
				return func(r pki.Role) ca.Store {
					s, err := ca.NewDBStore(db, prefix+"-"+r.String())
					require.NoError(t, err)
					return s
				}
			}
			keys := catest.NewTokenKeys(t)
			h, err := ca.BuildHierarchy(ctx, ca.HierarchyConfig{RootKeys: catest.NewTokenKeys(t), Keys: keys,
				Logger: slog.New(slog.DiscardHandler), NewStore: newStore(db)})
			require.NoError(t, err)

			cardholder := func(a *ca.Authority, csr []byte) error {
				nonce, err := a.NewCANonce()
				require.NoError(t, err)
				_, err = a.IssueCardholder(ctx, ca.CardholderRequest{CSR: csr, PAN: testPAN, Expiry: testExpiry,
					WalletSecret: walletSecret(t), CANonce: nonce})
				return err
			}
			refused := func(t *testing.T, err error, msg string) {
				t.Helper()
				require.Error(t, err, msg)
				assert.Equal(t, ca.ReasonKeyCertified, ca.ReasonOf(err), "%s: %v", msg, err)
			}

			k1, err := keys.GenerateKey(ctx, "holder-1", pki.AlgECDSAP256)
			require.NoError(t, err)
			csr1 := catest.CSR(t, k1, "x")
			require.NoError(t, cardholder(h.CCA, csr1))
			refused(t, cardholder(h.CCA, csr1), "same key, same CA, same role")

			sec, err := h.MCA.Enroll(ctx, pki.RoleMerchant, "shop-1")
			require.NoError(t, err)
			kx, err := keys.GenerateKey(ctx, "kx-1", pki.AlgECDSAP256)
			require.NoError(t, err)
			_, err = h.MCA.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleMerchant, ID: "shop-1", Secret: sec,
				SignatureCSR: csr1, KeyExchangeCSR: catest.CSR(t, kx, "x")})
			refused(t, err, "the cardholder's key as a merchant's, at another CA")

			refused(t, cardholder(h.CCA, catest.CSR(t, keys.Signer("setpay-mca"), "x")), "a CA key as a cardholder's")

			// Many requests for one new key at once, at two CAs: exactly one certificate.
			k2, err := keys.GenerateKey(ctx, "holder-2", pki.AlgECDSAP256)
			require.NoError(t, err)
			csr2 := catest.CSR(t, k2, "x")
			const n = 6
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if i%2 == 0 {
						errs[i] = cardholder(h.CCA, csr2)
						return
					}
					_, errs[i] = h.Brand.IssueSubordinateCA(ctx, ca.CARequest{Role: pki.RolePCA, CommonName: "Second PCA", CSR: csr2, Validity: 24 * time.Hour})
				}()
			}
			wg.Wait()
			wins := 0
			for _, err := range errs {
				if err == nil {
					wins++
					continue
				}
				refused(t, err, "concurrent certification")
			}
			assert.Equal(t, 1, wins, "exactly one certification of the key")

			// A restart: the CCA brought back on a new handle of the same database.
			db2 := openDB(t, dsn)
			cca2, err := ca.NewAuthority(ca.Config{Signer: keys.Signer("setpay-cca"), Certificate: h.CCA.Certificate(),
				Chain: []*x509.Certificate{h.Brand.Certificate(), h.Root.Certificate()}, Store: newStore(db2)(pki.RoleCCA),
				Logger: slog.New(slog.DiscardHandler)})
			require.NoError(t, err)
			refused(t, cardholder(cca2, csr1), "after a restart")
			k3, err := keys.GenerateKey(ctx, "holder-3", pki.AlgECDSAP256)
			require.NoError(t, err)
			require.NoError(t, cardholder(cca2, catest.CSR(t, k3, "x")), "a new key is certified")
		})
	}
}

// TestKeyUnicityInMemory: the in-memory stores of one hierarchy share their set of
// certified keys too.
func TestKeyUnicityInMemory(t *testing.T) {
	f := catest.New(t)
	ctx := context.Background()
	k := f.Key(t, pki.AlgECDSAP256, hsm.UsageSign)
	csr := catest.CSR(t, k, "x")
	issue := func() error {
		nonce, err := f.H.CCA.NewCANonce()
		require.NoError(t, err)
		_, err = f.H.CCA.IssueCardholder(ctx, ca.CardholderRequest{CSR: csr, PAN: testPAN, Expiry: testExpiry, WalletSecret: walletSecret(t), CANonce: nonce})
		return err
	}
	require.NoError(t, issue())
	err := issue()
	assert.Equal(t, ca.ReasonKeyCertified, ca.ReasonOf(err), "%v", err)
	_, err = f.H.Brand.IssueSubordinateCA(ctx, ca.CARequest{Role: pki.RoleMCA, CommonName: "Other MCA", CSR: csr, Validity: time.Hour})
	assert.Equal(t, ca.ReasonKeyCertified, ca.ReasonOf(err), "another CA of the hierarchy: %v", err)
}
