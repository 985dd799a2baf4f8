package source

import (
	"os"
	"testing"

	"github.com/nkudo/nkudo/internal/egress"
)

// TestMain installs go-git's egress-scoped HTTP transport, as nkudo's main
// does: the HTTP fetch tests go through it.
func TestMain(m *testing.M) {
	egress.InstallGit()
	os.Exit(m.Run())
}
