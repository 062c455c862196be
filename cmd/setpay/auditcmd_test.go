package main

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/store"
)

func TestAuditVerifyDetectsDeletedAndEditedRecords(t *testing.T) {
	tests := []struct {
		name   string
		tamper string // SQL run on the database; "" leaves it alone
		broken bool
		out    string
	}{
		{"intact", "", false, "audit chain verified: 5 records"},
		{"deleted", "DELETE FROM audit_log WHERE seq = 3", true, "BROKEN at record 3"},
		{"last deleted", "DELETE FROM audit_log WHERE seq = 5", true, "BROKEN"},
		{"edited", "UPDATE audit_log SET purpose = 'sign nothing' WHERE seq = 2", true, "BROKEN at record 2"},
		{"reordered time", "UPDATE audit_log SET at = at + 1 WHERE seq = 4", true, "BROKEN at record 4"},
		// What a PostgreSQL store holds between a commit and the chainer's pass.
		{"unchained", "INSERT INTO audit_pending (at, actor, key_uri, purpose, xid, details) VALUES (1764590400000000, 'gateway:gw-1', '', 'sign', 'x', '')",
			false, "audit chain verified: 5 records, none missing or altered\n1 more records committed but not chained yet (oldest 2025-12-01T12:00:00Z)"},
		{"deleted with unchained", "DELETE FROM audit_log WHERE seq = 3; INSERT INTO audit_pending (at, actor, key_uri, purpose, xid, details) VALUES (1764590400000000, 'g', '', 's', 'x', '')",
			true, "BROKEN at record 3: record missing (sequence gap) (2 records verified before it)\n1 more records committed but not chained yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "gw.db")
			db, err := store.Open(ctx, "sqlite:"+path)
			require.NoError(t, err)
			for i := range 5 {
				_, err := db.AppendAudit(ctx, store.AuditRecord{Time: time.Now(), Actor: "gateway:gw-1",
					KeyURI: "pkcs11:token=gw;object=sign", Purpose: "sign LIFECYCLE_RESPONSE", XID: "x", Details: string(rune('a' + i))})
				require.NoError(t, err)
			}
			require.NoError(t, db.Close())
			if tt.tamper != "" {
				raw, err := sql.Open("sqlite", path)
				require.NoError(t, err)
				_, err = raw.ExecContext(ctx, tt.tamper)
				require.NoError(t, err)
				require.NoError(t, raw.Close())
			}
			var out bytes.Buffer
			env := &cliEnv{stdout: &out, stderr: io.Discard, logger: slog.New(slog.DiscardHandler)}
			err = runAuditVerify(ctx, env, []string{"--store", "sqlite:" + path})
			if tt.broken {
				require.Error(t, err)
				assert.ErrorIs(t, err, store.ErrAuditBroken)
			} else {
				require.NoError(t, err)
			}
			assert.Contains(t, out.String(), tt.out)
		})
	}
}

func TestAuditVerifyNeedsStore(t *testing.T) {
	env := &cliEnv{stdout: io.Discard, stderr: io.Discard, logger: slog.New(slog.DiscardHandler)}
	assert.Error(t, runAuditVerify(context.Background(), env, nil))
}
