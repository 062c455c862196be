package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/internal/testenv"
)

// forEachBackend runs fn on a fresh SQLite store and, when SETPAY_TEST_PG_DSN
// is set, on a fresh PostgreSQL schema.
func forEachBackend(t *testing.T, fn func(t *testing.T, s *Store)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { fn(t, openTestSQLite(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, openTestPG(t)) })
}

func openTestSQLite(t testing.TB) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "var", "setpay.db")
	s, err := Open(context.Background(), "sqlite:"+path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// pgSchemaDSN returns a DSN for a fresh, empty PostgreSQL schema.
func pgSchemaDSN(t testing.TB) string {
	t.Helper()
	return testenv.PostgresSchema(t)
}

func openTestPG(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), pgSchemaDSN(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// softMAC stands in for a token's MAC key in the store's own tests; the token-held
// key is tested in hsm and, end to end, in system and cmd/setpay.
type softMAC struct{ key []byte }

func (m softMAC) MAC(_ context.Context, data []byte) ([]byte, error) {
	h := hmac.New(sha256.New, m.key)
	h.Write(data)
	return h.Sum(nil), nil
}

func (softMAC) URI() string { return "pkcs11:token=test;object=pan-hash;type=secret-key" }

var (
	testPANKey = []byte("0123456789abcdef0123456789abcdef")
	testHasher = NewPANHasher(softMAC{testPANKey})
	t0         = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func testAuth(t testing.TB, merchant, xid string, amount int64) *Authorization {
	t.Helper()
	ph, err := testHasher.HashPAN(context.Background(), "4111111111111111")
	require.NoError(t, err)
	mask, err := MaskPAN("4111111111111111")
	require.NoError(t, err)
	return &Authorization{
		MerchantID: merchant, XID: xid, Amount: amount, Currency: "EUR", AuthorizedAmount: amount,
		Status: AuthAuthorized, AuthCode: "A1B2C3", PANHash: ph, PANHashKey: testHasher.KeyID(), PANMask: mask, CardExpiry: "202812",
		CaptureTokenID: "ct-" + xid, CreatedAt: t0, ExpiresAt: t0.Add(7 * 24 * time.Hour),
	}
}

func insertAuth(t testing.TB, s *Store, a *Authorization) {
	t.Helper()
	require.NoError(t, s.Update(context.Background(), func(ctx context.Context, tx Tx) error {
		return tx.InsertAuthorization(ctx, a)
	}))
}

func getAuth(t testing.TB, s *Store, merchant, xid string) *Authorization {
	t.Helper()
	var a *Authorization
	require.NoError(t, s.View(context.Background(), func(ctx context.Context, tx Tx) error {
		var err error
		a, err = tx.GetAuthorization(ctx, merchant, xid)
		return err
	}))
	return a
}

func reqHash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

var (
	longAgo   = time.Unix(1, 0)
	farFuture = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)
