package reconciler_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/forge/forgetest"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/sqlite"
)

const tenant = "acme"

var admin = store.Actor{Kind: store.ActorAdmin, ID: "test"}

type env struct {
	t     testing.TB
	st    store.Store
	rec   *reconciler.Reconciler
	repo  store.Repository
	git   *gittest.Repo
	forge *forgetest.Server
	opts  reconciler.Options
}

type testLog struct{ t testing.TB }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func openStore(t testing.TB) store.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newEnv builds a store with tenant acme, sites, a repository backed by a
// real git remote, a fake Gitea for statuses, and a reconciler.
func newEnv(t testing.TB, sites []string, tweak func(*reconciler.Options)) *env {
	t.Helper()
	ctx := t.Context()
	e := &env{t: t, st: openStore(t), git: gittest.New(t), forge: forgetest.New(t)}
	if _, err := e.st.CreateTenant(ctx, admin, store.Tenant{ID: tenant}); err != nil {
		t.Fatal(err)
	}
	for _, s := range sites {
		if _, err := e.st.CreateSite(ctx, admin, tenant, s); err != nil {
			t.Fatal(err)
		}
	}
	repo, err := e.st.CreateRepository(ctx, admin, store.Repository{Tenant: tenant, Name: "fleet", URL: e.git.Remote, Branch: "main"}, "hook-secret")
	if err != nil {
		t.Fatal(err)
	}
	e.repo = repo
	e.opts = reconciler.Options{
		Store:     e.st,
		DataDir:   t.TempDir(),
		Logger:    slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		PublicURL: "https://cp.example.com",
		Writers: func(ctx context.Context, repo store.Repository) ([]forge.Writer, error) {
			w, err := forge.NewGitea(forge.GitHubOptions{BaseURL: e.forge.URL, Owner: "acme", Repo: "fleet"})
			return []forge.Writer{w}, err
		},
		Reporter:           forge.ReporterOptions{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, MaxAttempts: 1000},
		ApplyCheckInterval: 20 * time.Millisecond,
		DriftInterval:      20 * time.Millisecond,
		PollInterval:       -1,
		// The sources are local repositories, the git servers loopback ones.
		AllowLocalSources: true,
		Egress:            egress.Policy{Allow: egress.Loopback()},
	}
	if tweak != nil {
		tweak(&e.opts)
	}
	e.rec, err = reconciler.New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.rec.Close) // before the data dir is removed
	return e
}

func (e *env) reconcile(ref string) (reconciler.Result, error) {
	e.t.Helper()
	repo, err := e.st.GetRepository(e.t.Context(), tenant, e.repo.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.rec.Reconcile(e.t.Context(), repo, ref)
}

func (e *env) mustReconcile() reconciler.Result {
	e.t.Helper()
	res, err := e.reconcile("")
	if err != nil {
		e.t.Fatalf("reconcile: %v", err)
	}
	return res
}

func (e *env) plans() []store.StoredPlan {
	e.t.Helper()
	ps, err := e.st.ListPlans(e.t.Context(), tenant, store.PlanFilter{Limit: 10000, WithActions: true})
	if err != nil {
		e.t.Fatal(err)
	}
	return ps
}

func (e *env) status(commit, context string) store.CommitStatus {
	e.t.Helper()
	sts, err := e.st.CommitStatuses(e.t.Context(), tenant, e.repo.ID, commit)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range sts {
		if s.Context == context {
			return s
		}
	}
	return store.CommitStatus{}
}

// converge plays the agent: it runs every action of the site's active plan
// and reports the inventory that results.
func (e *env) converge(site string, desired []model.VirtualMachine, fail string) {
	e.t.Helper()
	ctx := e.t.Context()
	ap, err := e.st.ActivePlan(ctx, tenant, site)
	if err != nil {
		e.t.Fatalf("active plan of %s: %v", site, err)
	}
	agent := store.Actor{Kind: store.ActorAgent, ID: tenant + "/" + site}
	for _, a := range ap.Plan.Actions {
		if err := e.st.StartAction(ctx, tenant, site, ap.Plan.ID, a.ID, time.Now()); err != nil {
			e.t.Fatal(err)
		}
		res := store.ActionResult{PlanID: ap.Plan.ID, ActionID: a.ID, Status: model.ActionSucceeded, FinishedAt: time.Now()}
		if a.VM == fail {
			res.Status, res.Error = model.ActionFailed, "boot failed"
		}
		if _, err := e.st.RecordActionResult(ctx, agent, tenant, site, res); err != nil {
			e.t.Fatal(err)
		}
		if res.Status == model.ActionFailed {
			return
		}
	}
	e.heartbeat(site, inventoryOf(desired, site))
}

func (e *env) heartbeat(site string, vms []model.ObservedVM) store.HeartbeatResult {
	e.t.Helper()
	hr, err := e.st.RecordHeartbeat(e.t.Context(), tenant, site, store.Heartbeat{VMs: vms, Time: time.Now()})
	if err != nil {
		e.t.Fatal(err)
	}
	return hr
}

func inventoryOf(desired []model.VirtualMachine, site string) []model.ObservedVM {
	out := []model.ObservedVM{}
	for _, vm := range desired {
		if vm.Site != site {
			continue
		}
		out = append(out, model.ObservedVM{Name: vm.Name, State: vm.Spec.State, Managed: true, SpecHash: vm.Spec.Hash(), CPUs: vm.Spec.CPUs, MemoryMiB: vm.Spec.MemoryMiB})
	}
	return out
}

func desiredVMs(sites []string, vms int, state model.VMState) []model.VirtualMachine {
	var out []model.VirtualMachine
	for _, s := range sites {
		for v := 1; v <= vms; v++ {
			out = append(out, model.VirtualMachine{Name: vmName(v), Site: s, Spec: vmSpec(state, 1)})
		}
	}
	return out
}

func vmName(v int) string { return "vm-0" + string(rune('0'+v)) }

// vmSpec mirrors gittest.VM.
func vmSpec(state model.VMState, cpus int) model.VMSpec {
	return model.VMSpec{
		State: state, CPUs: cpus, MemoryMiB: 256,
		Image:    &model.Image{URL: "https://images.example.com/alpine.raw", SHA256: "bf5be81788e670051ac69259352fc924dfd83f96acde6fdabc5105aaa1c9852c"},
		Kernel:   &model.Kernel{URL: "https://images.example.com/vmlinux", SHA256: "61947921197e8f7829fc98a120348472deb3d530786e70c507abe81e0b4e2e05", Cmdline: "console=ttyS0 root=/dev/vda rw"},
		Networks: []model.Network{{Bridge: "br-lan"}},
	}
}

func sitesOf(ps []store.StoredPlan, status model.PlanStatus) []string {
	var out []string
	for _, p := range ps {
		if status == "" || p.Status == status {
			out = append(out, p.Plan.Site)
		}
	}
	slices.Sort(out)
	return out
}

var threeSites = []string{"site-0001", "site-0002", "site-0003"}

func TestReconcileIsIncremental(t *testing.T) {
	e := newEnv(t, threeSites, nil)
	e.git.Fleet("fleet", 3, 2)
	e.git.Write("README.md", "not a manifest\n")
	c1 := e.git.Commit("three sites")

	res := e.mustReconcile()
	if diff := cmp.Diff(threeSites, res.Planned); diff != "" {
		t.Errorf("cold reconcile planned (-want +got):\n%s", diff)
	}
	if got := sitesOf(e.plans(), model.PlanPending); !cmp.Equal(got, threeSites) {
		t.Errorf("pending plans for %v, want %v", got, threeSites)
	}
	if st := e.status(c1, forge.ContextPlan); st.State != store.StateSuccess || !strings.Contains(st.Description, "3 sites") {
		t.Errorf("nkudo/plan = %+v", st)
	}

	// The same commit again plans nothing, stores nothing and keeps its statuses.
	planStatus := e.status(c1, forge.ContextPlan)
	res = e.mustReconcile()
	if got := e.status(c1, forge.ContextPlan); got.Description != planStatus.Description || !got.UpdatedAt.Equal(planStatus.UpdatedAt) {
		t.Errorf("reconciling %s again changed nkudo/plan: %q → %q", c1[:8], planStatus.Description, got.Description)
	}
	if len(res.Planned) != 0 || len(res.Stored) != 0 || len(e.plans()) != 3 {
		t.Errorf("second reconcile of %s: planned %v stored %d, plans %d", c1[:8], res.Planned, len(res.Stored), len(e.plans()))
	}

	// A commit outside the manifests of sites changes nothing either.
	e.git.Write("README.md", "still not a manifest\n")
	e.git.Commit("docs")
	if res = e.mustReconcile(); len(res.Planned) != 0 {
		t.Errorf("docs-only commit planned %v", res.Planned)
	}

	// One file changes: one site is re-planned and its plan supersedes the old one.
	e.git.Write("fleet/site-0002.yaml", gittest.Site("site-0002")+"---\n"+gittest.VM("site-0002", "vm-01", "Running", 2)+"---\n"+gittest.VM("site-0002", "vm-02", "Running", 1))
	c3 := e.git.Commit("resize site-0002/vm-01")
	res = e.mustReconcile()
	if diff := cmp.Diff([]string{"site-0002"}, res.Planned); diff != "" {
		t.Errorf("one-file change planned (-want +got):\n%s", diff)
	}
	ps := e.plans()
	if got := sitesOf(ps, model.PlanSuperseded); !cmp.Equal(got, []string{"site-0002"}) {
		t.Errorf("superseded %v", got)
	}
	repo, _ := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	if repo.LastAppliedCommit != c3 {
		t.Errorf("last applied = %s, want %s", repo.LastAppliedCommit, c3)
	}
}

func TestInvalidCommitChangesNothing(t *testing.T) {
	e := newEnv(t, threeSites, nil)
	e.git.Fleet("fleet", 3, 1)
	c1 := e.git.Commit("valid")
	e.mustReconcile()
	before := e.plans()

	e.git.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+strings.Replace(gittest.VM("site-0001", "vm-01", "Running", 1), "cpus: 1", "cpus: lots", 1))
	e.git.Remove("fleet/site-0003.yaml") // would prune, were the commit valid
	c2 := e.git.Commit("broken")
	_, err := e.reconcile("")
	if !errors.Is(err, reconciler.ErrInvalidCommit) {
		t.Fatalf("reconcile invalid commit: err = %v, want ErrInvalidCommit", err)
	}
	st := e.status(c2, forge.ContextValidate)
	if st.State != store.StateFailure || !strings.Contains(st.Description, "site-0001.yaml:") {
		t.Errorf("nkudo/validate = %+v, want failure naming the file and line", st)
	}
	if p := e.status(c2, forge.ContextPlan); p.State != "" {
		t.Errorf("an invalid commit got a plan status: %+v", p)
	}
	if diff := cmp.Diff(before, e.plans()); diff != "" {
		t.Errorf("plans changed (-before +after):\n%s", diff)
	}
	repo, _ := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	if repo.LastAppliedCommit != c1 || repo.LastError == "" {
		t.Errorf("repository: last applied %s (want %s), last error %q", repo.LastAppliedCommit, c1, repo.LastError)
	}
	// The forge shows it too.
	waitFor(t, "forge validate failure", func() bool {
		s, ok := e.forge.Latest(c2, "nkudo/validate")
		return ok && s.State == "failure"
	})
}

func TestEmptyOrUnreachableSourceIsAnError(t *testing.T) {
	e := newEnv(t, threeSites, nil)
	e.git.Fleet("fleet", 3, 1)
	e.git.Commit("valid")
	e.mustReconcile()
	before := e.plans()

	e.git.Remove("fleet")
	e.git.Write("README.md", "empty now\n")
	c2 := e.git.Commit("delete everything")
	if _, err := e.reconcile(""); err == nil {
		t.Fatal("reconcile of a commit without manifests succeeded")
	}
	if st := e.status(c2, forge.ContextValidate); st.State != store.StateFailure {
		t.Errorf("nkudo/validate = %+v", st)
	}

	repo, _ := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	bad := "/nonexistent/remote.git"
	if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, repo.ID, store.RepositoryUpdate{URL: &bad}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reconcile(""); err == nil {
		t.Fatal("reconcile of an unreachable source succeeded")
	}
	if diff := cmp.Diff(before, e.plans()); diff != "" {
		t.Errorf("plans changed (-before +after):\n%s", diff)
	}
}

func TestPruneRefusal(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	e.git.Fleet("fleet", 1, 2)
	e.git.Commit("two VMs")
	e.mustReconcile()
	want := desiredVMs([]string{"site-0001"}, 2, model.VMRunning)
	e.converge("site-0001", want, "")

	e.git.Write("fleet/site-0001.yaml", gittest.Site("site-0001"))
	c2 := e.git.Commit("remove every VM")
	res := e.mustReconcile()
	if _, ok := res.Refused["site-0001"]; !ok || len(res.Stored) != 0 {
		t.Fatalf("refused %v, stored %d; want site-0001 refused and nothing stored", res.Refused, len(res.Stored))
	}
	st := e.status(c2, forge.ContextPlan)
	if st.State != store.StateFailure || !strings.Contains(st.Description, "site-0001") {
		t.Errorf("nkudo/plan = %+v", st)
	}
	if _, err := e.st.ActivePlan(t.Context(), tenant, "site-0001"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("active plan after a refusal: %v", err)
	}

	// With the opt-in annotation the prune is planned.
	e.git.Write("fleet/site-0001.yaml", gittest.SiteAllowPrune("site-0001"))
	e.git.Commit("remove every VM, on purpose")
	res = e.mustReconcile()
	if len(res.Refused) != 0 || len(res.Stored) != 1 {
		t.Errorf("with opt-in: refused %v stored %d", res.Refused, len(res.Stored))
	}
}

func TestApplyStatus(t *testing.T) {
	e := newEnv(t, threeSites, nil)
	runLoop(t, e.rec)

	e.git.Fleet("fleet", 3, 1)
	c1 := e.git.Commit("three sites")
	e.mustReconcile()
	if st := e.status(c1, forge.ContextApply); st.State != store.StatePending {
		t.Fatalf("nkudo/apply right after planning = %+v", st)
	}
	waitFor(t, "forge apply pending", func() bool {
		s, ok := e.forge.Latest(c1, "nkudo/apply")
		return ok && s.State == "pending"
	})
	want := desiredVMs(threeSites, 1, model.VMRunning)
	e.converge("site-0001", want, "")
	e.converge("site-0002", want, "")
	waitFor(t, "2 of 3", func() bool { return strings.Contains(e.status(c1, forge.ContextApply).Description, "2 of 3") })
	e.converge("site-0003", want, "")
	waitFor(t, "apply success", func() bool { return e.status(c1, forge.ContextApply).State == store.StateSuccess })
	waitFor(t, "forge apply success", func() bool {
		s, ok := e.forge.Latest(c1, "nkudo/apply")
		return ok && s.State == "success" && strings.HasPrefix(s.TargetURL, "https://cp.example.com/")
	})
	// The forge saw pending first, then success.
	var states []string
	for _, s := range e.forge.Statuses(c1) {
		if s.Context == "nkudo/apply" {
			states = append(states, s.State)
		}
	}
	if len(states) < 2 || states[0] != "pending" || states[len(states)-1] != "success" {
		t.Errorf("forge apply states %v, want pending … success", states)
	}

	// A failed action fails the status, naming site and action.
	e.git.Write("fleet/site-0002.yaml", gittest.Site("site-0002")+"---\n"+gittest.VM("site-0002", "vm-01", "Running", 1)+"---\n"+gittest.VM("site-0002", "vm-09", "Running", 1))
	c2 := e.git.Commit("add vm-09")
	e.mustReconcile()
	e.converge("site-0002", nil, "vm-09")
	waitFor(t, "apply failure", func() bool {
		st := e.status(c2, forge.ContextApply)
		return st.State == store.StateFailure && strings.Contains(st.Description, "site site-0002: create vm-09 failed")
	})

	// A commit superseded before it finished says so.
	e.git.Write("fleet/site-0003.yaml", gittest.Site("site-0003")+"---\n"+gittest.VM("site-0003", "vm-01", "Stopped", 1))
	c3 := e.git.Commit("stop vm-01")
	e.mustReconcile()
	e.git.Write("fleet/site-0003.yaml", gittest.Site("site-0003")+"---\n"+gittest.VM("site-0003", "vm-01", "Running", 2))
	c4 := e.git.Commit("no, resize it")
	e.mustReconcile()
	waitFor(t, "superseded", func() bool {
		st := e.status(c3, forge.ContextApply)
		return st.State == store.StateError && strings.Contains(st.Description, "superseded by "+c4[:12])
	})
}

func TestOfflineSiteFailsApply(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) { o.OfflineTimeout = 50 * time.Millisecond })
	runLoop(t, e.rec)
	e.git.Fleet("fleet", 1, 1)
	c1 := e.git.Commit("one")
	e.mustReconcile()
	waitFor(t, "offline failure", func() bool {
		st := e.status(c1, forge.ContextApply)
		return st.State == store.StateFailure && strings.Contains(st.Description, "site site-0001 has not reported")
	})
}

func TestDriftIsRepaired(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	runLoop(t, e.rec)
	e.git.Fleet("fleet", 1, 2)
	e.git.Commit("two VMs")
	e.mustReconcile()
	want := desiredVMs([]string{"site-0001"}, 2, model.VMRunning)
	e.converge("site-0001", want, "")
	e.rec.InventoryChanged(t.Context(), tenant, "site-0001")
	// Converged: the drift check stores nothing.
	waitFor(t, "no active plan", func() bool {
		_, err := e.st.ActivePlan(t.Context(), tenant, "site-0001")
		return errors.Is(err, store.ErrNotFound)
	})

	// Someone stops vm-02 by hand.
	inv := inventoryOf(want, "site-0001")
	inv[1].State = model.VMStopped
	e.heartbeat("site-0001", inv)
	e.rec.InventoryChanged(t.Context(), tenant, "site-0001")
	waitFor(t, "drift plan", func() bool {
		ap, err := e.st.ActivePlan(t.Context(), tenant, "site-0001")
		return err == nil && len(ap.Plan.Actions) == 1 && ap.Plan.Actions[0].Operation == model.OpStart && ap.Plan.Actions[0].VM == "vm-02"
	})

	// Suspended: drift is left alone.
	e.converge("site-0001", want, "")
	yes := true
	if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{Suspended: &yes}); err != nil {
		t.Fatal(err)
	}
	before := e.rec.TaskCounts()
	inv[0].State = model.VMStopped
	e.heartbeat("site-0001", inv)
	e.rec.InventoryChanged(t.Context(), tenant, "site-0001")
	e.rec.InventoryChanged(t.Context(), tenant, "site-0001")
	if res, _ := e.rec.Trigger(t.Context(), tenant, e.repo.ID, ""); res.Queued {
		t.Errorf("trigger of a suspended repository was queued")
	}
	// The drift loop has looked at the change (and left it alone) once a
	// drift task finished as suspended.
	waitFor(t, "drift task skipped as suspended", func() bool {
		c := e.rec.TaskCounts()
		return c.Drift > before.Drift && c.Suspended > before.Suspended
	})
	if _, err := e.st.ActivePlan(t.Context(), tenant, "site-0001"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("suspended repository got a drift plan: %v", err)
	}
	if c := e.rec.TaskCounts(); c.Reconcile != before.Reconcile {
		t.Errorf("a suspended repository was reconciled: %d reconcile tasks, %d before", c.Reconcile, before.Reconcile)
	}
}

func TestForcePushRewind(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	e.git.Fleet("fleet", 1, 1)
	c1 := e.git.Commit("one VM")
	r1 := e.mustReconcile()
	e.git.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Running", 1)+"---\n"+gittest.VM("site-0001", "vm-02", "Running", 1))
	e.git.Commit("two VMs")
	e.mustReconcile()
	e.git.ResetHard(c1)
	r3 := e.mustReconcile()
	if r3.Commit != c1 || len(r3.Planned) != 1 {
		t.Fatalf("rewind reconcile: commit %s planned %v", r3.Commit, r3.Planned)
	}
	ap, err := e.st.ActivePlan(t.Context(), tenant, "site-0001")
	if err != nil || ap.Plan.ID != r1.Stored[0].ID {
		t.Errorf("after rewind the active plan is %v (%v), want the first commit's plan %s again", ap.Plan.ID, err, r1.Stored[0].ID)
	}
}

func TestPreview(t *testing.T) {
	e := newEnv(t, threeSites, nil)
	e.git.Fleet("fleet", 3, 1)
	e.git.Commit("base")
	e.mustReconcile()
	before := e.plans()
	e.git.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Stopped", 1))
	head := e.git.PushBranch("stop-vm", "stop vm-01")
	repo, _ := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	p, err := e.rec.PreviewNow(t.Context(), repo, 7, head)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.PlanText, "site-0001") || len(p.PlanJSON) == 0 || p.Summary == "" {
		t.Errorf("preview = %+v", p)
	}
	got, err := e.st.GetPreview(t.Context(), tenant, e.repo.ID, 7)
	if err != nil || got.Commit != head {
		t.Errorf("stored preview %+v, %v", got, err)
	}
	if st := e.status(head, forge.ContextPlan); st.State != store.StateSuccess {
		t.Errorf("preview nkudo/plan = %+v", st)
	}
	if st := e.status(head, forge.ContextApply); st.State != "" {
		t.Errorf("a preview got nkudo/apply: %+v", st)
	}
	if diff := cmp.Diff(before, e.plans()); diff != "" {
		t.Errorf("a preview changed plans (-before +after):\n%s", diff)
	}
}

func TestGitNotesStatuses(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) { o.Writers = nil })
	notes := store.ForgeGitNotes
	if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{ForgeKind: &notes}); err != nil {
		t.Fatal(err)
	}
	e.git.Fleet("fleet", 1, 1)
	c1 := e.git.Commit("one")
	e.mustReconcile()
	waitFor(t, "notes", func() bool {
		out, err := gitOut(e.git.Remote, "notes", "--ref=nkudo", "show", c1)
		return err == nil && strings.Contains(out, `"context":"nkudo/plan","state":"success"`) && strings.Contains(out, `"context":"nkudo/validate"`)
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStalePlanIsReplanned: the agent refuses a plan computed against an
// older inventory (every action skipped as stale); the commit does not
// count as applied, the site is re-planned from the fresh inventory, and
// nkudo/apply follows the new plan.
func TestStalePlanIsReplanned(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	runLoop(t, e.rec)
	e.git.Fleet("fleet", 1, 1)
	c1 := e.git.Commit("one")
	res := e.mustReconcile()
	p0 := res.Stored[0]
	e.heartbeat("site-0001", []model.ObservedVM{}) // the first report moves the inventory past p0
	agent := store.Actor{Kind: store.ActorAgent, ID: tenant + "/site-0001"}
	for _, a := range p0.Actions {
		r := store.ActionResult{PlanID: p0.ID, ActionID: a.ID, Status: model.ActionSkipped, FinishedAt: time.Now(),
			Error: "stale plan: computed against inventory version 0, the agent has reported version 1 since; not executed"}
		if _, err := e.st.RecordActionResult(t.Context(), agent, tenant, "site-0001", r); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a re-plan", func() bool {
		ap, err := e.st.ActivePlan(t.Context(), tenant, "site-0001")
		return err == nil && ap.Plan.ID != p0.ID && ap.Plan.InventoryVersion == 1
	})
	if st := e.status(c1, forge.ContextApply); st.State != store.StatePending {
		t.Fatalf("nkudo/apply after a stale refusal = %+v, want pending", st)
	}
	e.converge("site-0001", desiredVMs([]string{"site-0001"}, 1, model.VMRunning), "")
	waitFor(t, "apply success", func() bool { return e.status(c1, forge.ContextApply).State == store.StateSuccess })
}

// TestPreviewComment: a preview writes one plan comment on the pull
// request; a preview of a later head edits that same comment; a forge
// outage does not fail the preview, and the comment follows once the forge
// is back.
func TestPreviewComment(t *testing.T) {
	e := newEnv(t, threeSites, nil)
	e.git.Fleet("fleet", 3, 1)
	e.git.Commit("base")
	e.mustReconcile()
	repo, _ := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	marker := forge.PlanMarker("")
	ours := func() []forgetest.Comment {
		var out []forgetest.Comment
		for _, c := range e.forge.Comments(7) {
			if strings.HasPrefix(c.Body, marker+"\n") {
				out = append(out, c)
			}
		}
		return out
	}

	e.git.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Stopped", 1))
	h1 := e.git.PushBranch("stop-vm", "stop vm-01")
	if _, err := e.rec.PreviewNow(t.Context(), repo, 7, h1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first comment", func() bool { c := ours(); return len(c) == 1 && strings.Contains(c[0].Body, h1) })
	first := ours()[0]
	if !strings.Contains(first.Body, "`site-0001`") || !strings.Contains(first.Body, "```diff\n") {
		t.Errorf("comment does not show the plan of site-0001:\n%s", first.Body)
	}

	e.forge.SetDown(true)
	e.git.Write("fleet/site-0002.yaml", gittest.Site("site-0002")+"---\n"+gittest.VM("site-0002", "vm-01", "Stopped", 1))
	h2 := e.git.PushBranch("stop-more", "stop another")
	if _, err := e.rec.PreviewNow(t.Context(), repo, 7, h2); err != nil {
		t.Fatalf("a forge outage failed the preview: %v", err)
	}
	e.forge.SetDown(false)
	waitFor(t, "the edited comment", func() bool { c := ours(); return len(c) == 1 && strings.Contains(c[0].Body, h2) })
	if got := ours(); got[0].ID != first.ID {
		t.Errorf("the second head got comment %d, want the first one (%d) edited", got[0].ID, first.ID)
	}

	// Merged: the comment says so, and a preview still in flight does not
	// edit it back (it queues no comment at all).
	if err := e.rec.PreviewClosed(t.Context(), tenant, e.repo.ID, 7, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the merged comment", func() bool { c := ours(); return len(c) == 1 && strings.Contains(c[0].Body, "was merged") })
	if _, err := e.rec.PreviewNow(t.Context(), repo, 7, h1); err != nil {
		t.Fatal(err)
	}
	e.rec.WaitComments(e.repo.ID)
	if c := ours(); len(c) != 1 || !strings.Contains(c[0].Body, "was merged") || c[0].ID != first.ID {
		t.Errorf("after a late preview the comment is %+v, want the merged note", c)
	}
}
