// Package backend opens the store.Store a database URL names, so callers
// (nkudo serve, nkudo migrate, test harnesses) need not know the backends.
package backend

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/postgres"
	"github.com/nkudo/nkudo/store/seal"
	"github.com/nkudo/nkudo/store/sqlite"
)

// DefaultSQLiteFile is the database file name inside the data dir.
const DefaultSQLiteFile = "nkudo.db"

// Open opens the store named by databaseURL and applies pending migrations:
//   - "" or "sqlite://": SQLite file DefaultSQLiteFile in dataDir (created 0700 if missing);
//   - "sqlite://NAME" or "sqlite:NAME": that file, relative to dataDir unless absolute
//     ("sqlite:///var/lib/nkudo/n.db");
//   - "postgres://…" or "postgresql://…": PostgreSQL (any libpq URL parameters).
func Open(ctx context.Context, databaseURL, dataDir string, logger *slog.Logger) (store.Store, error) {
	return OpenWith(ctx, databaseURL, dataDir, OpenOptions{Logger: logger})
}

// OpenOptions configure OpenWith.
type OpenOptions struct {
	Logger *slog.Logger
	// NoMigrate opens the database as it is, for inspection: no migration
	// is applied and a missing SQLite file (or its directory) is an error
	// wrapping fs.ErrNotExist rather than created. The store's queries
	// assume the current schema, so call Pending first.
	NoMigrate bool
	// SecretKey seals secrets at rest. nil: SecretKeyFile, or else
	// seal.DefaultKeyFile in the data dir, generated with a warning when
	// missing (see seal.LoadOrCreate); with NoMigrate, a throw-away key.
	SecretKey *seal.Key
	// SecretKeyFile names the key file when SecretKey is nil.
	SecretKeyFile string
	// AuditKey keys the audit chain (nil = unkeyed; a keyed chain then
	// refuses appends with store.ErrAuditKey); AuditKeyFresh says the key
	// was just made. See sqlstore.Options.
	AuditKey      store.AuditKey
	AuditKeyFresh bool
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, databaseURL, dataDir string, o OpenOptions) (store.Store, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	key := o.SecretKey
	switch {
	case key != nil, o.NoMigrate:
	case o.SecretKeyFile == "" && dataDir == "":
		// Nowhere to keep a key (a database-only migration): the store
		// makes up one for this process and refuses to seal old rows with it.
		logger.Warn("no secret key file and no data dir: secrets written now will not open after a restart", "component", "store")
	default:
		k, err := seal.LoadOrCreate(o.SecretKeyFile, dataDir, logger)
		if err != nil {
			return nil, err
		}
		key = k
	}
	switch {
	case databaseURL == "" || strings.HasPrefix(databaseURL, "sqlite:"):
		path, err := SQLitePath(databaseURL, dataDir)
		if err != nil {
			return nil, err
		}
		if !o.NoMigrate {
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return nil, fmt.Errorf("create data dir: %w", err)
			}
		}
		s, err := sqlite.Open(ctx, path, sqlite.Options{Logger: logger, NoMigrate: o.NoMigrate, Key: key, AuditKey: o.AuditKey, AuditKeyFresh: o.AuditKeyFresh})
		if err != nil {
			return nil, err
		}
		return s, nil
	case strings.HasPrefix(databaseURL, "postgres://"), strings.HasPrefix(databaseURL, "postgresql://"):
		s, err := postgres.Open(ctx, databaseURL, postgres.Options{Logger: logger, NoMigrate: o.NoMigrate, Key: key, AuditKey: o.AuditKey, AuditKeyFresh: o.AuditKeyFresh})
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", Redact(databaseURL), err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("database url %q: want sqlite:// or postgres://: %w", Redact(databaseURL), store.ErrInvalid)
}

// SQLitePath resolves an empty or sqlite: URL to a file path.
func SQLitePath(databaseURL, dataDir string) (string, error) {
	rest := strings.TrimPrefix(strings.TrimPrefix(databaseURL, "sqlite:"), "//")
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		return "", fmt.Errorf("database url %q: sqlite takes no parameters: %w", databaseURL, store.ErrInvalid)
	}
	if filepath.IsAbs(rest) {
		return filepath.Clean(rest), nil
	}
	if dataDir == "" {
		return "", fmt.Errorf("database url %q: a relative SQLite file needs a data dir: %w", databaseURL, store.ErrInvalid)
	}
	if rest == "" {
		rest = DefaultSQLiteFile
	}
	return filepath.Join(dataDir, rest), nil
}

// Migrate opens the store (which applies pending migrations), closes it and
// returns the names of the migrations it applied (none when up to date).
func Migrate(ctx context.Context, databaseURL, dataDir string, logger *slog.Logger) ([]string, error) {
	return MigrateWith(ctx, databaseURL, dataDir, OpenOptions{Logger: logger})
}

// MigrateWith is Migrate with options (the secret key that seals rows an
// older release left in plain text).
func MigrateWith(ctx context.Context, databaseURL, dataDir string, o OpenOptions) ([]string, error) {
	s, err := OpenWith(ctx, databaseURL, dataDir, o)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if a, ok := s.(interface{ Applied() []string }); ok {
		return a.Applied(), nil
	}
	return nil, nil
}

// Pending names the migrations not yet applied to the database databaseURL
// names (resolved as Open does), in order, writing nothing: a missing SQLite
// file is not created but reported as an error wrapping fs.ErrNotExist. A
// schema newer than this release is an error too.
func Pending(ctx context.Context, databaseURL, dataDir string, logger *slog.Logger) ([]string, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	names, err := pending(ctx, databaseURL, dataDir)
	if err == nil {
		logger.Debug("inspected schema", "component", "store", "database", Redact(databaseURL), "pending", len(names))
	}
	return names, err
}

func pending(ctx context.Context, databaseURL, dataDir string) ([]string, error) {
	switch {
	case databaseURL == "" || strings.HasPrefix(databaseURL, "sqlite:"):
		path, err := SQLitePath(databaseURL, dataDir)
		if err != nil {
			return nil, err
		}
		return sqlite.Pending(ctx, path)
	case strings.HasPrefix(databaseURL, "postgres://"), strings.HasPrefix(databaseURL, "postgresql://"):
		names, err := postgres.Pending(ctx, databaseURL)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", Redact(databaseURL), err)
		}
		return names, nil
	}
	return nil, fmt.Errorf("database url %q: want sqlite:// or postgres://: %w", Redact(databaseURL), store.ErrInvalid)
}

// Redact hides the password of a database URL, for logs and errors.
func Redact(databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return "(unparseable database url)"
	}
	return u.Redacted()
}
