package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int64
	name    string
	stmts   []string
}

// loadMigrations reads migrations/NNNN_name.sql in version order.
func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("store: read migrations: %w", err)
	}
	var ms []migration
	seen := map[int64]string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		prefix, _, ok := strings.Cut(name, "_")
		if !ok {
			return nil, fmt.Errorf("store: migration %q: want NNNN_name.sql", name)
		}
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("store: migration %q: bad version", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("store: migrations %q and %q share version %d", other, name, v)
		}
		seen[v] = name
		body, err := fs.ReadFile(migrationFiles, "migrations/"+name)
		if err != nil {
			return nil, fmt.Errorf("store: read migration %q: %w", name, err)
		}
		ms = append(ms, migration{version: v, name: name, stmts: splitSQL(string(body))})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// splitSQL drops "--" comment lines and splits on ';'. Migrations are
// ours and keep semicolons out of literals, so nothing smarter is needed.
func splitSQL(body string) []string {
	var kept []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		kept = append(kept, line)
	}
	var out []string
	for _, st := range strings.Split(strings.Join(kept, "\n"), ";") {
		if st = strings.TrimSpace(st); st != "" {
			out = append(out, st)
		}
	}
	return out
}

// migrate applies pending migrations in one transaction. On PostgreSQL an
// advisory lock keeps replicas starting together from racing; on SQLite the
// immediate transaction holds the write lock.
func (s *Store) migrate(ctx context.Context) error { return s.migrateTo(ctx, 0) }

// migrateTo applies pending migrations up to version upTo (0: all); tests use it to
// build a store as an older program left it.
func (s *Store) migrateTo(ctx context.Context, upTo int64) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	return s.runTx(ctx, false, func(ctx context.Context, t *txn) error {
		if lock := s.d.migrationLock(); lock != "" {
			if _, err := t.tx.ExecContext(ctx, lock); err != nil {
				return fmt.Errorf("store: migrate: lock: %w", err)
			}
		}
		if _, err := t.tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    BIGINT NOT NULL PRIMARY KEY,
			name       TEXT   NOT NULL,
			applied_at BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("store: migrate: create schema_migrations: %w", err)
		}
		applied := map[int64]bool{}
		var newest int64
		rows, err := t.query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return fmt.Errorf("store: migrate: read versions: %w", err)
		}
		for rows.Next() {
			var v int64
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return fmt.Errorf("store: migrate: read versions: %w", err)
			}
			applied[v] = true
			newest = max(newest, v)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("store: migrate: read versions: %w", err)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: migrate: read versions: %w", err)
		}
		if len(ms) > 0 && newest > ms[len(ms)-1].version {
			return fmt.Errorf("store: migrate: database schema version %d is newer than this program's %d",
				newest, ms[len(ms)-1].version)
		}
		for _, m := range ms {
			if applied[m.version] || (upTo > 0 && m.version > upTo) {
				continue
			}
			for i, st := range m.stmts {
				if _, err := t.tx.ExecContext(ctx, s.d.ddl(st)); err != nil {
					return fmt.Errorf("store: migrate %s: statement %d: %w", m.name, i+1, err)
				}
			}
			if _, err := t.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, time.Now().UnixMicro()); err != nil {
				return fmt.Errorf("store: migrate %s: record version: %w", m.name, err)
			}
		}
		return nil
	})
}

// SchemaVersion reports the newest applied migration version.
func (s *Store) SchemaVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: schema version: %w", err)
	}
	return v, nil
}
