package ca_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
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
			require.NoError(t, s1.PutIssued(ctx, ca.IssuedCert{Serial: serial, DER: []byte{0x30, 0}, Role: pki.RoleMerchant,
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
