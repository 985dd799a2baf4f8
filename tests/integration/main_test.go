package integration

import (
	"testing"

	"github.com/nkudo/nkudo/controlplane/cptest"
)

// TestMain runs the suites and stops the throw-away Postgres cluster that
// the postgres variants share. Shared setup lives in controlplane/cptest,
// not here, so every test starts its own isolated server.
func TestMain(m *testing.M) { cptest.Main(m) }
