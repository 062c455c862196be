// Package testenv is how setpay's tests ask for what lives outside the Go toolchain:
// a system tool (openssl, pkcs11-tool, p11-kit, chromium, ...) or a PostgreSQL server.
//
// A developer without the tool gets a skip that names the install step. CI sets
// SETPAY_REQUIRE=all (see .ci/run), and then every such absence fails the test instead:
// in CI nothing may skip for a missing tool or database. SETPAY_REQUIRE may also list
// names, comma-separated ("postgres,openssl"), to require only those.
//
// Every PostgreSQL schema handed out is counted: when SETPAY_PG_CASES_FILE names a
// file, one line per schema is appended to it, and scripts/test.sh prints the total.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	// The PostgreSQL driver the store uses, registered as "pgx".
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
)

const (
	// RequireEnv lists what must be present ("all", or names separated by commas).
	RequireEnv = "SETPAY_REQUIRE"
	// PostgresEnv holds the DSN of a server the tests may create schemas in.
	PostgresEnv = "SETPAY_TEST_PG_DSN"
	// PGCasesEnv names a file that gets one line per PostgreSQL schema handed out.
	PGCasesEnv = "SETPAY_PG_CASES_FILE"
)

// Required reports whether SETPAY_REQUIRE demands name.
func Required(name string) bool {
	v := strings.TrimSpace(os.Getenv(RequireEnv))
	if v == "" {
		return false
	}
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "all" || f == name {
			return true
		}
	}
	return false
}

// Missing ends the test because name is absent: a skip for a developer, a failure
// where SETPAY_REQUIRE demands it. how says how to get it.
func Missing(t testing.TB, name, how string) {
	t.Helper()
	if Required(name) {
		t.Fatalf("%s is required here (%s=%s) but missing: %s", name, RequireEnv, os.Getenv(RequireEnv), how)
		return
	}
	t.Skipf("%s missing: %s", name, how)
}

// Tool returns the path of a program on PATH, or ends the test through Missing.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, name, "scripts/install-deps.sh installs it")
	}
	return p
}

// File returns path if it exists, or ends the test through Missing under name.
func File(t testing.TB, name, path, how string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, name, how)
	}
	return path
}

// PostgresDSN returns the DSN of the test server, or ends the test through Missing.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(PostgresEnv)
	if dsn == "" {
		Missing(t, "postgres", PostgresEnv+" not set; run: scripts/pg-test.sh run go test ./...")
	}
	return dsn
}

// PostgresSchema creates an empty schema on the test server, drops it when the test
// ends, and returns a DSN whose search_path points at it: every test starts from an
// empty database and tests run in parallel without seeing each other's rows.
func PostgresSchema(t testing.TB) string {
	t.Helper()
	dsn := PostgresDSN(t)
	admin, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })
	var rnd [6]byte
	_, err = rand.Read(rnd[:])
	require.NoError(t, err)
	schema := "t_" + hex.EncodeToString(rnd[:])
	_, err = admin.ExecContext(context.Background(), "CREATE SCHEMA "+schema)
	require.NoError(t, err, "create a test schema on %s", PostgresEnv)
	t.Cleanup(func() {
		if _, err := admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	countPGCase(t)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema
}

func countPGCase(t testing.TB) {
	path := os.Getenv(PGCasesEnv)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Logf("count PostgreSQL case in %s: %v", path, err)
		return
	}
	defer f.Close()
	// One short write with O_APPEND: lines from parallel test binaries do not interleave.
	_, _ = fmt.Fprintln(f, t.Name())
}
