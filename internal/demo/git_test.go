package demo

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/nkudo/nkudo/internal/egress"
)

func TestRepoServesCommitsOverSmartHTTP(t *testing.T) {
	src := fstest.MapFS{"sites/a.yaml": {Data: []byte("a: 1\n")}, "vms/b.yaml": {Data: []byte("b: 2\n")}}
	g, err := initRepo(filepath.Join(t.TempDir(), "repo"), src)
	if err != nil {
		t.Fatal(err)
	}
	first, err := g.commit("first", time.Unix(1_700_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)

	// The test binary routes go-git's HTTP through the egress policy, as
	// nkudo does: fetches carry a scope that allows loopback.
	ctx, _ := egress.NewGit(egress.Policy{Allow: egress.Loopback()}, 0).Context(t.Context())
	clone, err := git.PlainCloneContext(ctx, filepath.Join(t.TempDir(), "clone"), false, &git.CloneOptions{URL: srv.URL + "/fleet.git"})
	if err != nil {
		t.Fatalf("clone over HTTP: %v", err)
	}
	head, err := clone.Head()
	if err != nil || head.Hash().String() != first {
		t.Fatalf("clone head = %v, %v; want %s", head, err, first)
	}

	if err := os.WriteFile(filepath.Join(g.dir, "vms/b.yaml"), []byte("b: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	second, err := g.commit("second", time.Unix(1_700_000_100, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := clone.FetchContext(ctx, &git.FetchOptions{}); err != nil {
		t.Fatalf("incremental fetch: %v", err)
	}
	ref, err := clone.Reference(plumbing.NewRemoteReferenceName("origin", "main"), true)
	if err != nil || ref.Hash().String() != second {
		t.Fatalf("origin/main after fetch = %v, %v; want %s", ref, err, second)
	}
}
