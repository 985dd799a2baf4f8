package main

import (
	"os"
	"os/exec"
	"testing"
)

// TestStaticCrossBuild builds the agent the way it ships: static
// (CGO_ENABLED=0) for linux/amd64 and linux/arm64.
func TestStaticCrossBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: cross-compiles twice; skipped in -short mode")
	}
	for _, arch := range []string{"amd64", "arm64"} {
		cmd := exec.Command("go", "build", "-o", t.TempDir()+"/nkudo-edge", "github.com/nkudo/nkudo/cmd/nkudo-edge")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("CGO_ENABLED=0 GOARCH=%s build: %v\n%s", arch, err, out)
		}
	}
}
