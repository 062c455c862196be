package store

import (
	"context"
	"crypto/sha256"
	"math/big"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCertificatesAndRevocations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		serial := SerialHex(new(big.Int).SetBytes([]byte{0x01, 0xab, 0xcd}))
		assert.Equal(t, "1abcd", serial)
		cert := &Certificate{Issuer: "setpay-root", Serial: serial, Role: "merchant", Subject: "CN=shop",
			NotAfter: t0.Add(365 * 24 * time.Hour), DER: []byte{0x30, 0x03, 0x02, 0x01, 0x01}, IssuedAt: t0,
			KeyHash: KeyHashOf([]byte("spki"))}
		require.NoError(t, s.Update(ctx, func(ctx context.Context, tx Tx) error {
			require.NoError(t, tx.InsertCertificate(ctx, cert))
			assert.ErrorIs(t, tx.InsertCertificate(ctx, cert), ErrConflict)
			assert.ErrorIs(t, tx.InsertCertificate(ctx, &Certificate{Issuer: "x", Serial: "1"}), ErrInvalid)
			got, err := tx.GetCertificate(ctx, "setpay-root", serial)
			require.NoError(t, err)
			assert.Equal(t, cert, got)
			_, err = tx.GetCertificate(ctx, "other", serial)
			assert.ErrorIs(t, err, ErrNotFound)

			_, err = tx.GetRevocation(ctx, "setpay-root", serial)
			assert.ErrorIs(t, err, ErrNotFound)
			rev := &Revocation{Issuer: "setpay-root", Serial: serial, Reason: 1, RevokedAt: t0.Add(time.Hour)}
			require.NoError(t, tx.Revoke(ctx, rev))
			assert.ErrorIs(t, tx.Revoke(ctx, rev), ErrConflict, "already revoked")
			assert.ErrorIs(t, tx.Revoke(ctx, &Revocation{Issuer: "setpay-root", Serial: "ff", Reason: 1,
				RevokedAt: t0}), ErrNotFound, "unknown certificate")
			assert.ErrorIs(t, tx.Revoke(ctx, &Revocation{Issuer: "setpay-root", Serial: serial, Reason: 7,
				RevokedAt: t0}), ErrInvalid, "reason 7 is unused in RFC 5280")
			got2, err := tx.GetRevocation(ctx, "setpay-root", serial)
			require.NoError(t, err)
			assert.Equal(t, rev, got2)
			list, err := tx.ListRevocations(ctx, "setpay-root")
			require.NoError(t, err)
			assert.Equal(t, []Revocation{*rev}, list)
			list, err = tx.ListRevocations(ctx, "other")
			require.NoError(t, err)
			assert.Empty(t, list)
			return nil
		}))
	})
}

func TestCRLNumbersAreUniqueUnderConcurrency(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		const n = 8
		got := make([]int64, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.Update(ctx, func(ctx context.Context, tx Tx) error {
					var err error
					got[i], err = tx.NextCRLNumber(ctx, "setpay-root")
					return err
				})
			}()
		}
		wg.Wait()
		seen := map[int64]bool{}
		for i := 0; i < n; i++ {
			require.NoError(t, errs[i])
			assert.False(t, seen[got[i]], "CRL number %d reused", got[i])
			seen[got[i]] = true
		}
		for i := int64(1); i <= n; i++ {
			assert.True(t, seen[i], "CRL number %d missing", i)
		}
		require.NoError(t, s.Update(ctx, func(ctx context.Context, tx Tx) error {
			v, err := tx.NextCRLNumber(ctx, "other-ca")
			require.NoError(t, err)
			assert.Equal(t, int64(1), v, "numbers are per issuer")
			return nil
		}))
	})
}

func TestEnrollmentSecrets(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		h := sha256.Sum256([]byte("one-time secret"))
		wrong := sha256.Sum256([]byte("guess"))
		require.NoError(t, s.Update(ctx, func(ctx context.Context, tx Tx) error {
			require.NoError(t, tx.InsertEnrollmentSecret(ctx, &EnrollmentSecret{ID: "e1", Role: "merchant",
				SecretHash: h[:], ExpiresAt: t0.Add(time.Hour)}))
			require.NoError(t, tx.InsertEnrollmentSecret(ctx, &EnrollmentSecret{ID: "e2", Role: "cardholder",
				SecretHash: h[:], ExpiresAt: t0.Add(time.Hour)}))
			assert.ErrorIs(t, tx.InsertEnrollmentSecret(ctx, &EnrollmentSecret{ID: "e1", Role: "merchant",
				SecretHash: h[:], ExpiresAt: t0}), ErrConflict)
			assert.ErrorIs(t, tx.InsertEnrollmentSecret(ctx, &EnrollmentSecret{ID: "e3", SecretHash: []byte("short"),
				ExpiresAt: t0}), ErrInvalid)
			return nil
		}))
		tests := []struct {
			name    string
			id      string
			hash    []byte
			at      time.Time
			wantErr error
		}{
			{"unknown id", "nope", h[:], t0, ErrNotFound},
			{"wrong secret", "e1", wrong[:], t0, ErrNotFound},
			{"expired", "e2", h[:], t0.Add(time.Hour), ErrExpired},
			{"first use", "e1", h[:], t0, nil},
			{"second use", "e1", h[:], t0, ErrConflict},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				err := s.Update(ctx, func(ctx context.Context, tx Tx) error {
					e, err := tx.ConsumeEnrollmentSecret(ctx, tc.id, tc.hash, tc.at)
					if err == nil {
						assert.Equal(t, "merchant", e.Role)
						assert.Equal(t, tc.at, e.UsedAt)
					}
					return err
				})
				if tc.wantErr == nil {
					assert.NoError(t, err)
				} else {
					assert.ErrorIs(t, err, tc.wantErr)
				}
			})
		}
	})
}

func TestOrders(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		dh := sha256.Sum256([]byte("2 widgets"))
		o := &Order{XID: "x1", MerchantOrderID: "PO-1", DescriptionHash: dh[:], Amount: 1999, Currency: "JPY",
			State: OrderCreated, CreatedAt: t0}
		require.NoError(t, s.Update(ctx, func(ctx context.Context, tx Tx) error {
			require.NoError(t, tx.InsertOrder(ctx, o))
			dup := *o
			dup.XID = "x2"
			assert.ErrorIs(t, tx.InsertOrder(ctx, &dup), ErrConflict, "merchant order ID unique")
			bad := *o
			bad.XID, bad.MerchantOrderID, bad.Currency = "x3", "PO-3", "jpy"
			assert.ErrorIs(t, tx.InsertOrder(ctx, &bad), ErrInvalid)

			require.NoError(t, tx.SetOrderState(ctx, "x1", OrderCreated, OrderAuthorized, t0.Add(time.Minute)))
			assert.ErrorIs(t, tx.SetOrderState(ctx, "x1", OrderCreated, OrderCancelled, t0), ErrConflict)
			assert.ErrorIs(t, tx.SetOrderState(ctx, "nope", OrderCreated, OrderCancelled, t0), ErrNotFound)

			got, err := tx.GetOrderByMerchantOrderID(ctx, "PO-1")
			require.NoError(t, err)
			want := *o
			want.State, want.UpdatedAt = OrderAuthorized, t0.Add(time.Minute)
			assert.Equal(t, &want, got)
			got, err = tx.GetOrder(ctx, "x1")
			require.NoError(t, err)
			assert.Equal(t, &want, got)
			_, err = tx.GetOrder(ctx, "x9")
			assert.ErrorIs(t, err, ErrNotFound)
			return nil
		}))
	})
}

// TestKeyIsCertifiedOnce: one public key, several issuers (CAs of one hierarchy
// sharing the store) and roles, all at once: exactly one certificate is recorded,
// the others are ErrKeyCertified, and a second handle on the same database (a
// restart, another replica) refuses the key too.
func TestKeyIsCertifiedOnce(t *testing.T) {
	for name, dsn := range map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "ca.db") },
		"postgres": func(t *testing.T) string { return pgSchemaDSN(t) },
	} {
		t.Run(name, func(t *testing.T) { testKeyIsCertifiedOnce(t, dsn(t)) })
	}
}

func testKeyIsCertifiedOnce(t *testing.T, dsn string) {
	ctx := context.Background()
	s, err := Open(ctx, dsn)
	require.NoError(t, err)
	defer s.Close()
	{
		key := KeyHashOf([]byte("one SubjectPublicKeyInfo"))
		cert := func(issuer, role string, serial int64) *Certificate {
			return &Certificate{Issuer: issuer, Serial: SerialHex(big.NewInt(serial)), Role: role, Subject: "x",
				NotAfter: t0.Add(time.Hour), DER: []byte{0x30, 0x00}, IssuedAt: t0, KeyHash: key}
		}
		issuers := []struct{ issuer, role string }{{"cca", "cardholder"}, {"mca", "merchant"}, {"pca", "gateway"}, {"brand", "cca"}, {"mca", "merchant"}, {"pca", "gateway"}}
		errs := make([]error, len(issuers))
		var wg sync.WaitGroup
		for i, is := range issuers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.Update(ctx, func(ctx context.Context, tx Tx) error {
					return tx.InsertCertificate(ctx, cert(is.issuer, is.role, int64(i+1)))
				})
			}()
		}
		wg.Wait()
		ok := 0
		for i, err := range errs {
			if err == nil {
				ok++
				continue
			}
			assert.ErrorIs(t, err, ErrKeyCertified, "insert %d", i)
			assert.ErrorIs(t, err, ErrConflict, "insert %d", i)
		}
		assert.Equal(t, 1, ok, "exactly one certification of the key")

		other, err := Open(ctx, dsn)
		require.NoError(t, err)
		defer other.Close()
		err = other.Update(ctx, func(ctx context.Context, tx Tx) error {
			return tx.InsertCertificate(ctx, cert("root", "brand", 99))
		})
		assert.ErrorIs(t, err, ErrKeyCertified, "after reopening the store")
		require.NoError(t, other.Update(ctx, func(ctx context.Context, tx Tx) error {
			c := cert("root", "brand", 100)
			c.KeyHash = KeyHashOf([]byte("another key"))
			return tx.InsertCertificate(ctx, c)
		}), "another key is certified")
	}
}
