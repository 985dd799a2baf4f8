package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/schema"
)

// TestFreshReplicaServesDesiredState: two control planes on one Postgres.
// Replica a reconciles a repository over two commits; replica b joins
// afterwards with its own GitOps loop and an empty data directory, never
// fetches the repository, and still serves every site's desired state
// (the last valid commit's VMs, as git has them) through the user API,
// because the desired state lives in the store.
func TestFreshReplicaServesDesiredState(t *testing.T) {
	g := startGitOps(t, gitopsConfig{postgres: true})
	ctx := t.Context()
	sites := g.fleet(4, 2)
	for _, s := range sites {
		g.env.NewSite("acme", s)
	}
	c1 := g.git.Commit("four sites")
	g.push("delivery-1", "", c1)
	g.waitPlanned(c1)

	// The second commit changes one site, empties another and leaves the
	// rest alone: sites planned at different commits.
	g.git.Write("manifests/"+sites[0]+".yaml", gittest.Site(sites[0])+"---\n"+gittest.VM(sites[0], "vm-01", "Stopped", 2)+"---\n"+gittest.VM(sites[0], "db", "Running", 4))
	g.git.Write("manifests/"+sites[1]+".yaml", gittest.Site(sites[1]))
	c2 := g.git.Commit("reshape two sites")
	g.push("delivery-2", c1, c2)
	g.waitPlanned(c2)
	want, err := schema.Load(os.DirFS(filepath.Join(g.git.Work, "manifests")))
	if err != nil {
		t.Fatalf("load the manifests of %s: %v", c2[:12], err)
	}

	hooks := &lateHooks{}
	b := cptest.Start(t, cptest.Options{ReplicaOf: g.env, Reconciler: hooks, Webhooks: hooks})
	dataDir := t.TempDir()
	loop, err := reconciler.NewLoop(reconciler.Options{
		Store: b.Store(), DataDir: dataDir, Logger: newTestSlog(t), PublicURL: b.URL,
		PollInterval: -1, AllowLocalSources: true, Egress: egress.Policy{Allow: egress.Loopback()},
	})
	if err != nil {
		t.Fatal(err)
	}
	hooks.mu.Lock()
	hooks.loop = loop
	hooks.mu.Unlock()
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { loop.Run(lctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	onB := b.UserClient(b.AdminToken, "acme")
	for _, site := range sites {
		got, err := onB.SiteVMs(ctx, site)
		if err != nil {
			t.Fatalf("replica b: VMs of %s: %v", site, err)
		}
		if !got.DesiredKnown || got.DesiredCommit != c2 {
			t.Errorf("replica b: %s desired known %v at %q, want known at %s", site, got.DesiredKnown, got.DesiredCommit, c2[:12])
		}
		wantSpecs := map[string]model.VMSpec{}
		for _, vm := range want.VMs {
			if vm.Site == site {
				wantSpecs[vm.Name] = vm.Spec
			}
		}
		gotSpecs := map[string]model.VMSpec{}
		for _, v := range got.VMs {
			if v.Desired != nil {
				gotSpecs[v.Name] = *v.Desired
			}
		}
		if diff := cmp.Diff(wantSpecs, gotSpecs); diff != "" {
			t.Errorf("replica b: desired VMs of %s (-git +served):\n%s", site, diff)
		}
		onA, err := g.acme.Client.SiteVMs(ctx, site)
		if err != nil || !cmp.Equal(onA, got) {
			t.Errorf("replica a serves %s differently (%v):\n%s", site, err, cmp.Diff(onA, got))
		}
	}
	if len(want.VMs) == 0 || len(sites) != 4 {
		t.Fatalf("test fleet is empty: %d VMs", len(want.VMs))
	}
	if _, err := os.Stat(filepath.Join(dataDir, "git", g.repo.ID+".git")); !os.IsNotExist(err) {
		t.Errorf("replica b has a mirror of the repository (%v); it was to answer from the store alone", err)
	}
}

// waitPlanned waits until sha is the repository's last valid commit and
// its nkudo/plan status is final.
func (g *gitops) waitPlanned(sha string) {
	g.t.Helper()
	eventually(g.t, "nkudo/plan success of "+sha[:12], func() bool { st, _ := g.forgeState(sha, "nkudo/plan"); return st == "success" })
	eventually(g.t, sha[:12]+" applied", func() bool {
		r, err := g.acme.Client.GetRepo(g.t.Context(), g.repo.ID)
		return err == nil && r.LastAppliedCommit == sha
	})
}
