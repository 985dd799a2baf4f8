package main

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	manifestsexample "github.com/nkudo/nkudo/manifests-example"
	"github.com/nkudo/nkudo/schema"
)

// TestDemoEmbeddedManifests: the manifests built into the binary are the
// whole of manifests-example, and they load from a directory that has none
// (where a release tarball's `nkudo demo` runs).
func TestDemoEmbeddedManifests(t *testing.T) {
	want, err := schema.Load(os.DirFS("../../manifests-example"))
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	got, err := schema.Load(manifestsexample.FS())
	if err != nil {
		t.Fatalf("embedded manifests-example: %v", err)
	}
	if len(got.Sites) == 0 || len(got.VMs) == 0 {
		t.Fatalf("embedded manifests-example is empty: %d sites, %d VMs", len(got.Sites), len(got.VMs))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("embedded manifests-example differs from the directory (-dir +embedded):\n%s", d)
	}
}
