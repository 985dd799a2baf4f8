package reconciler_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/pgtest"
)

// TestMain installs go-git's egress-scoped HTTP transport, as nkudo's main
// does: the HTTP source tests fetch through it. It stops the PostgreSQL
// cluster a benchmark may have started.
func TestMain(m *testing.M) {
	egress.InstallGit()
	code := m.Run()
	if err := pgtest.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
	}
	os.Exit(code)
}
