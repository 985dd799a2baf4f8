package reconciler_test

import (
	"testing"

	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/pgtest"
)

// TestMain installs go-git's egress-scoped HTTP transport, as nkudo's main
// does: the HTTP source tests fetch through it. It stops the throw-away
// Postgres cluster the replica tests start.
func TestMain(m *testing.M) {
	egress.InstallGit()
	pgtest.Main(m)
}
