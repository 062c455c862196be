package store

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTokenPANHasher(t *testing.T) {
	ctx := context.Background()
	h := NewPANHasher(softMAC{testPANKey})
	a, err := h.HashPAN(ctx, "4111111111111111")
	require.NoError(t, err)
	assert.Len(t, a, 32)
	b, err := h.HashPAN(ctx, "4111111111111111")
	require.NoError(t, err)
	assert.Equal(t, a, b, "deterministic, so one card links its authorizations")
	c, err := h.HashPAN(ctx, "4111111111111129")
	require.NoError(t, err)
	assert.NotEqual(t, a, c)
	// The MAC input is domain-separated: not the bare HMAC of the PAN under the key.
	bare, err := PANHash(testPANKey, "4111111111111111")
	require.NoError(t, err)
	assert.NotEqual(t, bare, a)
	for _, bad := range []string{"", "4111", "41111111111x1111", strings.Repeat("4", 20)} {
		_, err := h.HashPAN(ctx, bad)
		assert.ErrorIs(t, err, ErrInvalid, bad)
	}
	assert.Equal(t, softMAC{}.URI(), h.KeyID())
}

// TestMigrationErasesSoftwareKeyedPANHashes builds a store as setpay wrote it before
// migration 0004 (HMAC under a key file, first 6 / last 4 mask), migrates it, and
// checks that no row keeps the old hash or more than the last 4 digits, that the old
// rows are marked, and that new rows go in beside them.
func TestMigrationErasesSoftwareKeyedPANHashes(t *testing.T) {
	ctx := context.Background()
	raw := map[string]func(t *testing.T) *Store{
		"sqlite": func(t *testing.T) *Store {
			s, err := openSQLite(t.TempDir()+"/old.db", false)
			require.NoError(t, err)
			return s
		},
		"postgres": func(t *testing.T) *Store {
			s, err := openPostgres(pgSchemaDSN(t))
			require.NoError(t, err)
			return s
		},
	}
	for name, open := range raw {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { _ = s.Close() })
			require.NoError(t, s.migrateTo(ctx, 2), "the schema before PAN hash keys")
			old := map[string]string{"x1": "4111111111111111", "x2": "378282246310005", "x3": "6011000990139424"}
			oldHashes := map[string][]byte{}
			for xid, pan := range old {
				h, err := PANHash(testPANKey, pan) // the old software-keyed hash
				require.NoError(t, err)
				oldHashes[xid] = h
				mask := pan[:6] + strings.Repeat("*", len(pan)-10) + pan[len(pan)-4:]
				_, err = s.db.ExecContext(ctx, s.d.rebind(`INSERT INTO authorizations (merchant_id, xid, amount, currency, authorized_amount,
					status, pan_hash, pan_mask, card_expiry, created_at, expires_at) VALUES ('m1', ?, 100, 'EUR', 100, 'authorized', ?, ?, '202812', 1, 2)`),
					xid, h, mask)
				require.NoError(t, err)
			}
			require.NoError(t, s.migrate(ctx))
			for xid, pan := range old {
				a := getAuth(t, s, "m1", xid)
				assert.Empty(t, a.PANHash, "%s: the software-keyed hash must be gone", xid)
				assert.NotEqual(t, oldHashes[xid], a.PANHash)
				assert.Equal(t, LegacyPANHashKey, a.PANHashKey, xid)
				assert.Equal(t, strings.Repeat("*", len(pan)-4)+pan[len(pan)-4:], a.PANMask, xid)
				assert.True(t, validMask(a.PANMask), xid)
			}
			// Nothing anywhere in the table still holds an old hash or a BIN.
			rows, err := s.db.QueryContext(ctx, `SELECT pan_hash, pan_mask FROM authorizations`)
			require.NoError(t, err)
			defer rows.Close()
			for rows.Next() {
				var h []byte
				var m string
				require.NoError(t, rows.Scan(&h, &m))
				for _, oh := range oldHashes {
					assert.NotEqual(t, oh, h)
				}
				assert.Equal(t, strings.Repeat("*", len(m)-4), m[:len(m)-4])
			}
			require.NoError(t, rows.Err())
			// New rows, keyed in the token, go in beside the migrated ones.
			insertAuth(t, s, testAuth(t, "m1", "new", 100))
			a := getAuth(t, s, "m1", "new")
			assert.Equal(t, testHasher.KeyID(), a.PANHashKey)
			assert.Len(t, a.PANHash, 32)
			assert.Equal(t, "************1111", a.PANMask)
		})
	}
}
