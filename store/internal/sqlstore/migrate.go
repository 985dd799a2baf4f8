package sqlstore

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// Migration is one embedded schema change, migrations/NNNN_name.sql.
type Migration struct {
	Version int
	Name    string // file name
	SQL     string
}

var migrationName = regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.sql$`)

// Migrations reads dir of fsys, sorted by version. Versions must be unique
// and positive, so a duplicated number fails loudly.
func Migrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration %s: name must look like 0001_name.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	// Numbers are handed out per change before the changes land, so a
	// number may be missing for a while; two files with one number, or a
	// number below 1, still fail.
	for i, m := range out {
		if m.Version < 1 || i > 0 && m.Version == out[i-1].Version {
			return nil, fmt.Errorf("migration %s: version %04d is not unique and positive", m.Name, m.Version)
		}
	}
	return out, nil
}

// MigrationsTable is created by each backend before applying migrations.
const MigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT NOT NULL,
	applied_at BIGINT NOT NULL
)`

// CheckNewer refuses a database migrated by a newer release: this binary
// would not know the newer schema's rules. newest is MAX(version) from
// schema_migrations (0 when empty).
func CheckNewer(newest int64, ms []Migration) error {
	known := int64(0)
	if len(ms) > 0 {
		known = int64(ms[len(ms)-1].Version)
	}
	if newest > known {
		return fmt.Errorf("database schema is at version %d, newer than this release knows (%d): run a release at least as new", newest, known)
	}
	return nil
}

// NewestQuery reads the newest applied migration version.
const NewestQuery = `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`

// AppliedQuery lists the applied migration versions.
const AppliedQuery = `SELECT version FROM schema_migrations`

// PendingNames names the migrations of ms whose version is not in applied,
// after refusing (as CheckNewer) a schema newer than ms.
func PendingNames(ms []Migration, applied []int64) ([]string, error) {
	done := make(map[int64]bool, len(applied))
	var newest int64
	for _, v := range applied {
		done[v] = true
		newest = max(newest, v)
	}
	if err := CheckNewer(newest, ms); err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if !done[int64(m.Version)] {
			out = append(out, m.Name)
		}
	}
	return out, nil
}

// Apply brings the schema over c up to ms: it creates schema_migrations,
// refuses a schema newer than ms (CheckNewer), then applies each migration
// not yet recorded, each in its own transaction run by inTx, and names
// those it applied. isNoRows recognises the driver's "no rows" error.
func Apply(ctx context.Context, c Conn, ms []Migration, inTx func(func(Conn) error) error, isNoRows func(error) bool) ([]string, error) {
	if _, err := c.Exec(ctx, MigrationsTable); err != nil {
		return nil, fmt.Errorf("create migrations table: %w", err)
	}
	var newest int64
	if err := c.QueryRow(ctx, NewestQuery).Scan(&newest); err != nil {
		return nil, fmt.Errorf("read schema version: %w", err)
	}
	if err := CheckNewer(newest, ms); err != nil {
		return nil, err
	}
	var applied []string
	for _, m := range ms {
		err := inTx(func(c Conn) error {
			var one int
			err := c.QueryRow(ctx, `SELECT 1 FROM schema_migrations WHERE version = $1`, m.Version).Scan(&one)
			if err == nil {
				return nil
			}
			if !isNoRows(err) {
				return err
			}
			if _, err := c.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply %s: %w", m.Name, err)
			}
			if _, err := c.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				m.Version, m.Name, time.Now().UnixMicro()); err != nil {
				return err
			}
			applied = append(applied, m.Name)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return applied, nil
}
