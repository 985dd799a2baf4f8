package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDeps pins the agent's dependency boundary: the edge binary must never
// link the store, the database drivers or git.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/nkudo/nkudo/cmd/nkudo-edge").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps returned only %d packages", len(deps))
	}
	forbidden := []string{
		"github.com/nkudo/nkudo/store", "github.com/nkudo/nkudo/controlplane", "github.com/nkudo/nkudo/reconciler",
		"github.com/jackc/pgx", "github.com/go-git/go-git", "modernc.org/sqlite", "database/sql",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("nkudo-edge depends on %s", d)
			}
		}
	}
}

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

// TestDepModules pins the modules linked into the edge binary, so that a new
// one on every edge host is a deliberate choice: filippo.io/age (and its
// filippo.io/hpke) decrypt the secrets addressed to the site.
func TestDepModules(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", "github.com/nkudo/nkudo/cmd/nkudo-edge").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	got := map[string]bool{}
	for _, m := range strings.Fields(string(out)) {
		got[m] = true
	}
	want := []string{
		"filippo.io/age", "filippo.io/hpke", "github.com/alecthomas/kong", "github.com/nkudo/nkudo",
		"github.com/vishvananda/netlink", "github.com/vishvananda/netns", "golang.org/x/crypto", "golang.org/x/sys",
	}
	for _, m := range want {
		if !got[m] {
			t.Errorf("nkudo-edge no longer links %s: update the pinned list", m)
		}
		delete(got, m)
	}
	for m := range got {
		t.Errorf("nkudo-edge links the new module %s: add it to the pinned list deliberately", m)
	}
}
