package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler/gittest"
)

// TestGitOpsPushToStatus: a commit to a real repository, a signed push
// webhook, the real agent applies the plan through the Cloud Hypervisor
// provider against the fake hypervisor, and nkudo/apply goes pending →
// success on the forge and in git notes.
func TestGitOpsPushToStatus(t *testing.T) {
	g := startGitOps(t, gitopsConfig{edgeSite: "store-042"})
	files := map[string][]byte{"/vmlinux": []byte("fake kernel"), "/root.raw": []byte("fake root disk")}
	artifacts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(artifacts.Close)
	digest := func(p string) string { sum := sha256.Sum256(files[p]); return hex.EncodeToString(sum[:]) }
	vm := func(name, state string) string {
		return fmt.Sprintf(`apiVersion: nkudo.io/v1alpha1
kind: VirtualMachine
metadata:
  name: %s
  site: store-042
spec:
  state: %s
  cpus: 1
  maxCpus: 2
  memoryMiB: 256
  image:
    url: %[3]s/root.raw
    sha256: %[5]s
  kernel:
    url: %[3]s/vmlinux
    sha256: %[4]s
    cmdline: console=ttyS0
  disks:
    - name: data
      sizeGiB: 1
  cloudInit:
    userData: |
      #cloud-config
      hostname: %[1]s
`, name, state, artifacts.URL, digest("/vmlinux"), digest("/root.raw"))
	}
	g.git.Write("manifests/store-042.yaml", gittest.Site("store-042")+"---\n"+vm("pos-1", "Running")+"---\n"+vm("pos-2", "Stopped"))
	c1 := g.git.Commit("store-042: two POS VMs")
	g.push("delivery-1", "", c1)
	eventually(t, "nkudo/apply pending on the forge", func() bool {
		st, _ := g.forgeState(c1, "nkudo/apply")
		return st == "pending"
	})
	g.edge.start()
	eventually(t, "nkudo/apply success on the forge", func() bool {
		st, _ := g.forgeState(c1, "nkudo/apply")
		return st == "success"
	})
	if states := g.forgeStates(c1, "nkudo/apply"); states[0] != "pending" || states[len(states)-1] != "success" {
		t.Errorf("forge nkudo/apply states %v, want pending … success", states)
	}
	for _, ctx := range []string{"nkudo/validate", "nkudo/plan"} {
		if st, desc := g.forgeState(c1, ctx); st != "success" {
			t.Errorf("forge %s = %s %q", ctx, st, desc)
		}
	}
	eventually(t, "git notes", func() bool {
		out := g.git.Git(g.git.Remote, "notes", "--ref=nkudo", "show", c1)
		return strings.Contains(out, `"context":"nkudo/apply","state":"success"`)
	})
	// The edge runs what git says, as the agent reports it.
	var lastView api.SiteVMs
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last VM view: %+v", lastView)
			for _, v := range lastView.VMs {
				t.Logf("  %s desired %+v actual %+v in sync %v", v.Name, v.Desired, v.Actual, v.InSync)
			}
		}
	})
	eventually(t, "inventory reported", func() bool {
		vms, err := g.acme.Client.SiteVMs(t.Context(), "store-042")
		lastView = vms
		if err != nil || !vms.DesiredKnown || vms.DesiredCommit != c1 {
			return false
		}
		for _, v := range vms.VMs {
			if !v.InSync {
				return false
			}
		}
		return len(vms.VMs) == 2
	})
	vms, err := g.acme.Client.SiteVMs(t.Context(), "store-042")
	if err != nil || len(vms.VMs) != 2 {
		t.Fatalf("store-042 VMs: %+v, %v; want pos-1 and pos-2", vms.VMs, err)
	}
	for _, v := range vms.VMs {
		want := map[string]model.VMState{"pos-1": model.VMRunning, "pos-2": model.VMStopped}[v.Name]
		if v.Actual == nil || v.Actual.State != want || !v.Actual.Managed {
			t.Errorf("%s: actual %+v, want %s and managed", v.Name, v.Actual, want)
		}
	}
}

// TestGitOpsPushToStatusTwoSites: the same loop across two sites, each
// agent's first report arriving after the plans were made (the stale-plan
// guard re-plans), with the agents played through the api client; on
// SQLite and on Postgres.
func TestGitOpsPushToStatusTwoSites(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		gitOpsPushToStatusTwoSites(t, gitopsConfig{postgres: o.Postgres})
	})
}

func gitOpsPushToStatusTwoSites(t *testing.T, cfg gitopsConfig) {
	g := startGitOps(t, cfg)
	sites := g.fleet(2, 2)
	for _, s := range sites {
		g.env.NewSite("acme", s)
	}
	c1 := g.git.Commit("two sites, two VMs each")
	g.push("delivery-1", "", c1)
	// The agents come up once the forge shows the commit pending; their
	// first report moves the inventory past the plans' (computed before any
	// report), so the stale-plan guard makes the control plane re-plan.
	eventually(t, "nkudo/apply pending on the forge", func() bool {
		st, _ := g.forgeState(c1, "nkudo/apply")
		return st == "pending"
	})
	var agents []*simAgent
	for _, s := range sites {
		agents = append(agents, g.startAgent(s))
	}
	eventually(t, "nkudo/apply success on the forge", func() bool {
		st, _ := g.forgeState(c1, "nkudo/apply")
		return st == "success"
	})
	if states := g.forgeStates(c1, "nkudo/apply"); states[0] != "pending" {
		t.Errorf("forge nkudo/apply states %v, want pending first", states)
	}
	for _, ctx := range []string{"nkudo/validate", "nkudo/plan"} {
		if st, desc := g.forgeState(c1, ctx); st != "success" {
			t.Errorf("forge %s = %s %q", ctx, st, desc)
		}
	}
	if _, desc := g.forgeState(c1, "nkudo/plan"); !strings.Contains(desc, "2 sites") || !strings.Contains(desc, "4 create") {
		t.Errorf("nkudo/plan description %q, want the plan summary", desc)
	}
	st, _ := g.forge.Latest(c1, "nkudo/apply")
	if !strings.HasPrefix(st.TargetURL, g.env.URL+"/v1/repos/"+g.repo.ID+"/commits/"+c1) {
		t.Errorf("target URL %q", st.TargetURL)
	}
	// The agents run what git says.
	for _, a := range agents {
		for _, vm := range []string{"vm-01", "vm-02"} {
			if got := a.state(vm); got != model.VMRunning {
				t.Errorf("%s/%s = %q, want Running", a.site, vm, got)
			}
		}
	}
	// git notes carry the same outcome.
	eventually(t, "git notes", func() bool {
		out := g.git.Git(g.git.Remote, "notes", "--ref=nkudo", "show", c1)
		return strings.Contains(out, `"context":"nkudo/apply","state":"success"`)
	})
	// The API shows it, marked as posted, and the desired side of the VM view.
	if s := g.apiStatus(c1, "nkudo/apply"); s.State != "success" {
		t.Errorf("API nkudo/apply = %+v", s)
	}
	vms, err := g.acme.Client.SiteVMs(t.Context(), sites[0])
	if err != nil || !vms.DesiredKnown || vms.DesiredCommit != c1 {
		t.Errorf("site VMs: desired known %v commit %s (%v)", vms.DesiredKnown, vms.DesiredCommit, err)
	}
}

// TestInvalidCommitKeepsFleet: an invalid commit fails nkudo/validate and
// changes nothing anywhere; the last valid commit stays desired.
func TestInvalidCommitKeepsFleet(t *testing.T) {
	g := startGitOps(t, gitopsConfig{})
	sites := g.fleet(1, 2)
	a := g.startAgent(sites[0])
	c1 := g.git.Commit("valid")
	g.pushApplied("d1", c1)
	plansBefore := len(g.plans())

	g.git.Write("manifests/site-0001.yaml", gittest.Site("site-0001")+"---\n"+strings.Replace(gittest.VM("site-0001", "vm-01", "Running", 1), "memoryMiB: 256", "memoryMiB: plenty", 1))
	c2 := g.git.Commit("broken: memoryMiB is not a number, vm-02 dropped")
	g.push("d2", c1, c2)
	eventually(t, "nkudo/validate failure", func() bool { st, _ := g.forgeState(c2, "nkudo/validate"); return st == "failure" })
	_, desc := g.forgeState(c2, "nkudo/validate")
	if !strings.Contains(desc, "site-0001.yaml:") {
		t.Errorf("validate description %q does not name file:line", desc)
	}
	for _, ctx := range []string{"nkudo/plan", "nkudo/apply"} {
		if st, _ := g.forgeState(c2, ctx); st != "" {
			t.Errorf("invalid commit got %s = %s", ctx, st)
		}
	}
	if n := len(g.plans()); n != plansBefore {
		t.Errorf("plans %d → %d after an invalid commit", plansBefore, n)
	}
	repo, err := g.acme.Client.GetRepo(t.Context(), g.repo.ID)
	if err != nil || repo.LastAppliedCommit != c1 || repo.LastError == "" {
		t.Errorf("repository: last applied %s (want %s), last error %q, %v", repo.LastAppliedCommit, c1, repo.LastError, err)
	}
	if a.state("vm-02") != model.VMRunning {
		t.Errorf("vm-02 is %q after an invalid commit", a.state("vm-02"))
	}
}

// TestPullRequestPreview: a pull request head is validated and planned
// against the live inventory; nothing is applied.
func TestPullRequestPreview(t *testing.T) {
	g := startGitOps(t, gitopsConfig{})
	sites := g.fleet(1, 1)
	a := g.startAgent(sites[0])
	c1 := g.git.Commit("base")
	g.pushApplied("d1", c1)
	plansBefore := len(g.plans())

	g.git.Write("manifests/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Stopped", 1))
	head := g.git.PushBranch("stop-vm", "stop vm-01")
	if code, body := g.webhook("pull_request", "d2", prPayload(12, head), true); code != 202 {
		t.Fatalf("pull_request webhook: %d %s", code, body)
	}
	eventually(t, "preview stored", func() bool {
		p, err := g.acme.Client.GetPreview(t.Context(), g.repo.ID, 12)
		return err == nil && p.Commit == head
	})
	p, _ := g.acme.Client.GetPreview(t.Context(), g.repo.ID, 12)
	if !strings.Contains(p.PlanText, "vm-01") || !strings.Contains(p.Summary, "1 stop") || len(p.PlanJSON) == 0 {
		t.Errorf("preview: summary %q text %q json %d bytes", p.Summary, p.PlanText, len(p.PlanJSON))
	}
	eventually(t, "preview statuses", func() bool {
		v, _ := g.forgeState(head, "nkudo/validate")
		pl, _ := g.forgeState(head, "nkudo/plan")
		return v == "success" && pl == "success"
	})
	if st, _ := g.forgeState(head, "nkudo/apply"); st != "" {
		t.Errorf("a pull request head got nkudo/apply = %s", st)
	}
	if n := len(g.plans()); n != plansBefore {
		t.Errorf("a preview stored plans: %d → %d", plansBefore, n)
	}
	if a.state("vm-01") != model.VMRunning {
		t.Errorf("a preview changed the site: vm-01 is %q", a.state("vm-01"))
	}
}

// TestPruneSafety: a commit deleting every managed VM of a site is refused
// with nkudo/plan=failure; nothing is stored or run for that site.
func TestPruneSafety(t *testing.T) {
	g := startGitOps(t, gitopsConfig{})
	sites := g.fleet(1, 2)
	a := g.startAgent(sites[0])
	c1 := g.git.Commit("two VMs")
	g.pushApplied("d1", c1)
	plansBefore := len(g.plans())

	g.git.Write("manifests/site-0001.yaml", gittest.Site("site-0001"))
	c2 := g.git.Commit("remove both VMs")
	g.push("d2", c1, c2)
	eventually(t, "nkudo/plan failure", func() bool { st, _ := g.forgeState(c2, "nkudo/plan"); return st == "failure" })
	if _, desc := g.forgeState(c2, "nkudo/plan"); !strings.Contains(desc, "site-0001") {
		t.Errorf("refusal %q does not name the site", desc)
	}
	if n := len(g.plans()); n != plansBefore {
		t.Errorf("a refused prune stored plans: %d → %d", plansBefore, n)
	}
	if a.state("vm-01") != model.VMRunning || a.state("vm-02") != model.VMRunning {
		t.Errorf("VMs changed after a refused prune: %+v", a.inventory())
	}
}

// TestDriftSelfHeal: a VM stopped by hand at the edge is started again.
func TestDriftSelfHeal(t *testing.T) {
	g := startGitOps(t, gitopsConfig{})
	sites := g.fleet(1, 2)
	a := g.startAgent(sites[0])
	c1 := g.git.Commit("two VMs")
	g.pushApplied("d1", c1)

	a.set("vm-02", func(v *model.ObservedVM) { v.State = model.VMStopped })
	eventually(t, "vm-02 started again", func() bool { return a.state("vm-02") == model.VMRunning })
	var drift bool
	for _, lp := range g.plans() {
		p, err := g.acme.Client.GetPlan(t.Context(), lp.Plan.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Plan.Actions) == 1 && p.Plan.Actions[0].Operation == model.OpStart && p.Plan.Actions[0].VM == "vm-02" {
			drift = true
		}
	}
	if !drift {
		t.Errorf("no drift-repair plan among %d plans", len(g.plans()))
	}
}

// TestDuplicateWebhookDelivery: a redelivered event is acknowledged and ignored.
func TestDuplicateWebhookDelivery(t *testing.T) {
	g := startGitOps(t, gitopsConfig{})
	g.fleet(1, 1)
	g.env.NewSite("acme", "site-0001")
	c1 := g.git.Commit("one VM")
	payload := pushPayload(strings.Repeat("0", 40), c1)
	if code, body := g.webhook("push", "same-delivery", payload, true); code != 202 || !strings.Contains(body, "accepted") {
		t.Fatalf("first delivery: %d %s", code, body)
	}
	if code, body := g.webhook("push", "same-delivery", payload, true); code != 200 || !strings.Contains(body, "duplicate") {
		t.Errorf("redelivery: %d %s, want 200 duplicate", code, body)
	}
	eventually(t, "reconciled once", func() bool { st, _ := g.forgeState(c1, "nkudo/plan"); return st == "success" })
	if n := len(g.forgeStates(c1, "nkudo/plan")); n != 1 {
		t.Errorf("nkudo/plan posted %d times", n)
	}
	if n := len(g.plans()); n != 1 {
		t.Errorf("%d plans, want 1", n)
	}
}

// TestBadWebhookSignature: a delivery with a wrong signature is refused
// and triggers nothing.
func TestBadWebhookSignature(t *testing.T) {
	g := startGitOps(t, gitopsConfig{})
	g.fleet(1, 1)
	c1 := g.git.Commit("one VM")
	if code, _ := g.webhook("push", "forged", pushPayload(strings.Repeat("0", 40), c1), false); code != 401 {
		t.Errorf("forged delivery answered %d, want 401", code)
	}
	// The genuine delivery with the same ID is still accepted: the forged
	// one recorded nothing.
	if code, body := g.webhook("push", "forged", pushPayload(strings.Repeat("0", 40), c1), true); code != 202 {
		t.Errorf("genuine delivery after a forged one: %d %s", code, body)
	}
	eventually(t, "genuine delivery reconciled", func() bool { st, _ := g.forgeState(c1, "nkudo/validate"); return st == "success" })
}

// TestForgeOutageDoesNotBlock: with the forge down, plans are stored and
// applied; the statuses arrive once it is back.
func TestForgeOutageDoesNotBlock(t *testing.T) {
	g := startGitOps(t, gitopsConfig{})
	sites := g.fleet(2, 1)
	var agents []*simAgent
	for _, s := range sites {
		agents = append(agents, g.startAgent(s))
	}
	g.forge.SetDown(true)
	c1 := g.git.Commit("two sites")
	g.push("d1", "", c1)
	eventually(t, "applied while the forge is down", func() bool {
		return g.apiStatus(c1, "nkudo/apply").State == "success"
	})
	for _, a := range agents {
		if a.state("vm-01") != model.VMRunning {
			t.Errorf("%s/vm-01 = %q", a.site, a.state("vm-01"))
		}
	}
	if g.forge.Posts() != 0 {
		t.Fatalf("forge down but %d statuses posted", g.forge.Posts())
	}
	g.forge.SetDown(false)
	eventually(t, "statuses delivered after the outage", func() bool {
		st, _ := g.forgeState(c1, "nkudo/apply")
		return st == "success"
	})
	if states := g.forgeStates(c1, "nkudo/apply"); slices.Contains(states, "pending") {
		t.Errorf("stale pending posted after the outage: %v", states)
	}
	eventually(t, "marked posted", func() bool { return g.apiStatus(c1, "nkudo/apply").Posted })
}
