package integration

import (
	"os"
	"testing"
)

// TestMain runs the suites. Shared setup lives in controlplane/cptest, not
// here, so every suite in this directory starts its own isolated server.
func TestMain(m *testing.M) {
	os.Exit(m.Run())
}
