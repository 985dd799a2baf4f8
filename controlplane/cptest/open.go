package cptest

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/sqlite"
)

// openStore opens the test store. (Interim: SQLite only, until
// store/backend.Open lands.)
func openStore(ctx context.Context, url, dataDir string, log *slog.Logger) (store.Store, error) {
	return sqlite.Open(ctx, filepath.Join(dataDir, "nkudo.db"), sqlite.Options{Logger: log})
}

func postgresURL(t testing.TB) string {
	t.Skip("POSTGRES UNAVAILABLE: internal/pgtest has not landed yet; the Postgres variant of this test did not run")
	return ""
}
