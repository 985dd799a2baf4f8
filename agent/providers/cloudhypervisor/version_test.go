package cloudhypervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionRunsTheBinaryOnlyWhenItChanges: facts ask for the version on
// every heartbeat; the binary is run again only after it was replaced.
func TestVersionRunsTheBinaryOnlyWhenItChanges(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "cloud-hypervisor")
	calls := filepath.Join(dir, "calls")
	script := func(version string) {
		t.Helper()
		body := "#!/bin/sh\necho x >> " + calls + "\necho cloud-hypervisor " + version + "\n"
		if err := os.WriteFile(bin, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	runs := func() int {
		b, _ := os.ReadFile(calls)
		return strings.Count(string(b), "x")
	}
	script("v53.0")
	p, err := New(Options{StateDir: t.TempDir(), Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		path, v, err := p.Version(t.Context())
		if err != nil || path != bin || v != "v53.0" {
			t.Fatalf("Version = %q, %q, %v; want %q, v53.0", path, v, err, bin)
		}
	}
	if n := runs(); n != 1 {
		t.Errorf("binary ran %d times for three unchanged asks; want 1", n)
	}
	script("v54.10") // a different size: an upgrade
	if _, v, err := p.Version(t.Context()); err != nil || v != "v54.10" {
		t.Fatalf("after the upgrade Version = %q, %v; want v54.10", v, err)
	}
	if n := runs(); n != 2 {
		t.Errorf("binary ran %d times after an upgrade; want 2", n)
	}
}
