package reconciler_test

import (
	"strings"
	"testing"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// TestPreviewDestructiveGate: a pull request whose plan deletes a VM fails
// nkudo/plan until it carries the accept label, read from the forge API
// or, when the webhook listed them, from the payload; the label name is
// the repository's; a plan without deletions passes unlabelled; the
// main-branch reconcile of the same change has no gate.
func TestPreviewDestructiveGate(t *testing.T) {
	e := newEnv(t, threeSites, nil)
	ctx := t.Context()
	e.git.Fleet("fleet", 3, 2)
	e.git.Commit("base")
	e.mustReconcile()
	for _, s := range threeSites {
		e.converge(s, desiredVMs([]string{s}, 2, model.VMRunning), "")
	}
	repo, _ := e.st.GetRepository(ctx, tenant, e.repo.ID)
	plan := func(sha string) store.CommitStatus { return e.status(sha, forge.ContextPlan) }

	// Not destructive: no label needed, and none read.
	e.git.Write("fleet/site-0003.yaml", gittest.Site("site-0003")+"---\n"+gittest.VM("site-0003", "vm-01", "Running", 1)+"---\n"+
		gittest.VM("site-0003", "vm-02", "Running", 1)+"---\n"+gittest.VM("site-0003", "vm-03", "Running", 1))
	safe := e.git.PushBranch("add-vm", "add vm-03")
	if _, err := e.rec.PreviewNow(ctx, repo, 8, safe); err != nil {
		t.Fatal(err)
	}
	if st := plan(safe); st.State != store.StateSuccess || strings.Contains(st.Description, "destructive") {
		t.Errorf("creating a VM: nkudo/plan = %s %q, want success", st.State, st.Description)
	}
	if n := e.forge.LabelReads(); n != 0 {
		t.Errorf("a plan without deletions read labels %d times", n)
	}

	e.git.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Running", 1))
	head := e.git.PushBranch("delete-vm", "delete vm-02")
	e.forge.SetLabels(7, "area/edge")
	if _, err := e.rec.PreviewNow(ctx, repo, 7, head); err != nil {
		t.Fatal(err)
	}
	want := "1 destructive action: add the label `nkudo/destructive-ok` to accept"
	if st := plan(head); st.State != store.StateFailure || st.Description != want {
		t.Fatalf("unlabelled destructive PR: nkudo/plan = %s %q, want failure %q", st.State, st.Description, want)
	}

	// The label is added: the forge API says so.
	e.forge.SetLabels(7, "area/edge", "nkudo/destructive-ok")
	if _, err := e.rec.PreviewNow(ctx, repo, 7, head); err != nil {
		t.Fatal(err)
	}
	if st := plan(head); st.State != store.StateSuccess || !strings.Contains(st.Description, "1 destructive action accepted by label nkudo/destructive-ok") {
		t.Fatalf("labelled destructive PR: nkudo/plan = %s %q, want success", st.State, st.Description)
	}

	// An "unlabeled" delivery lists the labels: the payload wins over the
	// API (which still has the label here).
	if err := e.rec.PreviewLabels(ctx, tenant, e.repo.ID, 7, head, []string{"area/edge"}); err != nil {
		t.Fatal(err)
	}
	if ran := e.rec.DrainQueue(ctx); ran["preview"] != 1 {
		t.Fatalf("ran %v, want one preview", ran)
	}
	if st := plan(head); st.State != store.StateFailure {
		t.Fatalf("after the payload dropped the label: nkudo/plan = %s %q, want failure", st.State, st.Description)
	}

	// The repository names its own label.
	label := "ops/destroy-ok"
	if _, err := e.st.UpdateRepository(ctx, admin, tenant, e.repo.ID, store.RepositoryUpdate{DestructiveLabel: &label}); err != nil {
		t.Fatal(err)
	}
	if err := e.rec.PreviewLabels(ctx, tenant, e.repo.ID, 7, head, []string{"nkudo/destructive-ok"}); err != nil {
		t.Fatal(err)
	}
	e.rec.DrainQueue(ctx)
	if st := plan(head); st.State != store.StateFailure || !strings.Contains(st.Description, "`ops/destroy-ok`") {
		t.Fatalf("default label on a repository with its own: nkudo/plan = %s %q, want failure naming ops/destroy-ok", st.State, st.Description)
	}
	if err := e.rec.PreviewLabels(ctx, tenant, e.repo.ID, 7, head, []string{"ops/destroy-ok"}); err != nil {
		t.Fatal(err)
	}
	e.rec.DrainQueue(ctx)
	if st := plan(head); st.State != store.StateSuccess {
		t.Fatalf("the repository's label: nkudo/plan = %s %q, want success", st.State, st.Description)
	}

	// Merged to main: the reconcile plans the deletion with no gate.
	e.git.Git(e.git.Work, "merge", "-q", "--ff-only", "delete-vm")
	e.git.Git(e.git.Work, "push", "-q", "origin", "main")
	res := e.mustReconcile()
	if st := plan(res.Commit); st.State != store.StateSuccess || len(res.Stored) != 1 {
		t.Errorf("main-branch reconcile of the deletion: nkudo/plan = %s %q, %d plans stored; want success and one plan", st.State, st.Description, len(res.Stored))
	}
}
