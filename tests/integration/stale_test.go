package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// heartbeatGate sits between the agent and the control plane: while shut,
// heartbeats do not reach the server (results, logs and plan polls do), as
// when a heartbeat is still on its way. It widens, deterministically, the
// window in which the control plane plans against an inventory the agent
// has already changed.
type heartbeatGate struct {
	agent.ControlPlane
	mu      sync.Mutex
	shut    bool
	refused int
}

func (h *heartbeatGate) Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	h.mu.Lock()
	if h.shut {
		h.refused++
		h.mu.Unlock()
		return api.HeartbeatResponse{}, errors.New("dial tcp: connection refused (heartbeats held back)")
	}
	h.mu.Unlock()
	return h.ControlPlane.Heartbeat(ctx, req)
}

func (h *heartbeatGate) set(shut bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.shut = shut
}

func (h *heartbeatGate) refusals() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refused
}

// staleRig is the GitOps loop with the real agent on site store-1, the fake
// hypervisor, and an artifact server whose kernel download for a VM can be
// held (so an action stays in flight until the test lets it finish).
type staleRig struct {
	*gitops
	gate  *heartbeatGate
	files map[string][]byte
	mu    sync.Mutex
	hold  map[string]chan struct{} // path → closed when the download may finish
	asked map[string]bool
	ws    string
}

func newStaleRig(t *testing.T, postgres bool) *staleRig {
	r := &staleRig{gitops: startGitOps(t, gitopsConfig{postgres: postgres, edgeSite: "store-1"}), gate: &heartbeatGate{},
		hold: map[string]chan struct{}{}, asked: map[string]bool{}, files: map[string][]byte{"/root.raw": []byte("fake root disk")}}
	for _, vm := range []string{"vm-a", "vm-b", "vm-c"} {
		r.files["/vmlinux-"+vm] = []byte("fake kernel of " + vm)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, ok := r.files[req.URL.Path]
		if !ok {
			http.NotFound(w, req)
			return
		}
		r.mu.Lock()
		r.asked[req.URL.Path] = true
		hold := r.hold[req.URL.Path]
		r.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-req.Context().Done():
				return
			}
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(r.releaseAll) // before the server closes: a held download must not block it
	r.ws = srv.URL
	r.edge.wrap = func(c agent.ControlPlane) agent.ControlPlane { r.gate.ControlPlane = c; return r.gate }
	return r
}

func (r *staleRig) holdDownload(path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hold[path] = make(chan struct{})
}

func (r *staleRig) release(path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch := r.hold[path]; ch != nil {
		close(ch)
		delete(r.hold, path)
	}
}

func (r *staleRig) releaseAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, ch := range r.hold {
		close(ch)
		delete(r.hold, p)
	}
}

func (r *staleRig) requested(path string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.asked[path]
}

func (r *staleRig) vmYAML(name string) string {
	digest := func(p string) string { sum := sha256.Sum256(r.files[p]); return hex.EncodeToString(sum[:]) }
	return fmt.Sprintf(`apiVersion: nkudo.io/v1alpha1
kind: VirtualMachine
metadata:
  name: %[1]s
  site: store-1
spec:
  state: Running
  cpus: 1
  maxCpus: 2
  memoryMiB: 256
  image:
    url: %[2]s/root.raw
    sha256: %[3]s
  kernel:
    url: %[2]s/vmlinux-%[1]s
    sha256: %[4]s
    cmdline: console=ttyS0
`, name, r.ws, digest("/root.raw"), digest("/vmlinux-"+name))
}

// push commits the site with vms (all Running) and delivers the webhook.
func (r *staleRig) push(msg string, vms ...string) string {
	r.t.Helper()
	docs := []string{gittest.Site("store-1")}
	for _, vm := range vms {
		docs = append(docs, r.vmYAML(vm))
	}
	r.git.Write("manifests/store-1.yaml", strings.Join(docs, "---\n"))
	c := r.git.Commit(msg)
	r.gitops.push("delivery-"+c, "", c)
	return c
}

// commitPlan waits for the plan stored for commit c.
func (r *staleRig) commitPlan(c string) store.StoredPlan {
	r.t.Helper()
	var p store.StoredPlan
	waitEdge(r.t, "a plan for commit "+c[:8], 20*time.Second, func() (bool, string) {
		ps, err := r.env.Store().ListPlans(r.t.Context(), "acme", store.PlanFilter{Site: "store-1", Commit: c, WithActions: true})
		if err != nil || len(ps) == 0 {
			return false, fmt.Sprint(err)
		}
		p = ps[len(ps)-1]
		return true, ""
	})
	return p
}

// sitePlans lists the site's plans, with their actions, oldest first.
func (r *staleRig) sitePlans() []store.StoredPlan {
	r.t.Helper()
	ps, err := r.env.Store().ListPlans(r.t.Context(), "acme", store.PlanFilter{Site: "store-1", WithActions: true})
	if err != nil {
		r.t.Fatal(err)
	}
	slices.SortStableFunc(ps, func(a, b store.StoredPlan) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return ps
}

func ops(p model.Plan) []string {
	var out []string
	for _, a := range p.Actions {
		out = append(out, string(a.Operation)+" "+a.VM)
	}
	return out
}

// waitApplied waits for nkudo/apply=success on commit c and returns the
// plan the agent executed last: the newest succeeded plan of the site.
func (r *staleRig) waitApplied(c string) store.StoredPlan {
	r.t.Helper()
	waitEdge(r.t, "nkudo/apply success for "+c[:8], 30*time.Second, func() (bool, string) {
		st, desc := r.forgeState(c, "nkudo/apply")
		return st == "success", st + " " + desc
	})
	ps := r.sitePlans()
	for i := len(ps) - 1; i >= 0; i-- {
		if ps[i].Status == model.PlanSucceeded {
			return ps[i]
		}
	}
	r.t.Fatal("no succeeded plan")
	return store.StoredPlan{}
}

// waitRunning waits until the reported inventory is exactly vms, running and managed.
func (r *staleRig) waitRunning(vms ...string) {
	r.t.Helper()
	waitEdge(r.t, "the inventory to show "+strings.Join(vms, ", ")+" running", 20*time.Second, func() (bool, string) {
		inv := r.edge.inventory()
		var got []string
		for _, vm := range inv.VMs {
			if vm.Managed && vm.State == model.VMRunning {
				got = append(got, vm.Name)
			}
		}
		return slices.Equal(got, vms) && len(inv.VMs) == len(vms), fmt.Sprintf("%+v", inv.VMs)
	})
}

// assertMinimalExecution checks that every action of the last executed
// plan did real work (none answered from an earlier plan's cached result)
// and that the plans computed against the half-way inventory were skipped
// as stale, not executed.
func (r *staleRig) assertMinimalExecution(final store.StoredPlan, wantOps []string, stale ...store.StoredPlan) {
	t := r.t
	t.Helper()
	if d := cmp.Diff(wantOps, ops(final.Plan)); d != "" {
		t.Errorf("last executed plan (-want +got):\n%s", d)
	}
	for _, a := range final.Actions {
		if a.Status != model.ActionSucceeded || strings.Contains(string(a.Output), "cachedFromPlan") {
			t.Errorf("last executed plan: %s %s %s %s: want succeeded by its own execution", a.Action.Operation, a.Action.VM, a.Status, a.Output)
		}
	}
	for _, sp := range stale {
		got, err := r.env.Store().GetPlan(t.Context(), "acme", sp.Plan.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range got.Actions {
			if a.Status == model.ActionSucceeded || a.Status == model.ActionFailed {
				t.Errorf("plan %s computed against the old inventory: %s %s %s, want not executed", sp.Plan.ID[:12], a.Action.Operation, a.Action.VM, a.Status)
			}
		}
	}
}

// holdUntilRefused waits until the agent has tried n more heartbeats
// against the shut gate, then checks that plan p has no outcome yet: the
// agent does not judge a plan while the change it made is unreported.
func (r *staleRig) holdUntilRefused(n int, p store.StoredPlan) {
	r.t.Helper()
	start := r.gate.refusals()
	waitEdge(r.t, "the agent to try to report before running the plan", 20*time.Second, func() (bool, string) {
		return r.gate.refusals() >= start+n, fmt.Sprint(r.gate.refusals())
	})
	got, err := r.env.Store().GetPlan(r.t.Context(), "acme", p.Plan.ID)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, a := range got.Actions {
		if a.Status != model.ActionPending {
			r.t.Fatalf("plan %s judged before the agent could report its inventory: %s %s %s", p.Plan.ID[:12], a.Action.Operation, a.Action.VM, a.Status)
		}
	}
}

// TestStalePlanAfterLastResult is case (a): the agent finishes plan 1 and
// its last result arrives before the heartbeat that carries the new
// inventory, so the next commit is planned against the half-way inventory.
// The agent reports its inventory before judging that plan, skips it as
// stale, and the control plane re-plans minimally.
func TestStalePlanAfterLastResult(t *testing.T) {
	edgeBackends(t, func(t *testing.T, postgres bool) {
		r := newStaleRig(t, postgres)
		r.edge.start()
		r.edge.waitFirstHeartbeat()
		v0 := r.edge.inventory().Version
		r.gate.set(true)

		c1 := r.push("store-1: vm-a", "vm-a")
		p1 := r.commitPlan(c1)
		if d := cmp.Diff([]string{"create vm-a", "start vm-a"}, ops(p1.Plan)); d != "" {
			t.Fatalf("plan 1 (-want +got):\n%s", d)
		}
		r.edge.waitPlanDone(&p1.Plan)
		// Plan 1 is done and reported; its inventory is not.
		if inv := r.edge.inventory(); inv.Version != v0 || len(inv.VMs) != 0 {
			t.Fatalf("inventory moved while heartbeats were held: %+v", inv)
		}

		c2 := r.push("store-1: vm-a, vm-b", "vm-a", "vm-b")
		p2 := r.commitPlan(c2)
		// The reproduction: planned against the half-way inventory.
		if p2.Plan.InventoryVersion != v0 || !slices.Contains(ops(p2.Plan), "create vm-a") {
			t.Fatalf("plan 2 = %q against version %d, want one against %d repeating create vm-a", ops(p2.Plan), p2.Plan.InventoryVersion, v0)
		}
		r.holdUntilRefused(2, p2)
		r.gate.set(false)

		final := r.waitApplied(c2)
		r.assertMinimalExecution(final, []string{"create vm-b", "start vm-b"}, p2)
		if final.Plan.InventoryVersion <= v0 {
			t.Errorf("re-plan computed against version %d, want newer than %d", final.Plan.InventoryVersion, v0)
		}
		assertOncePerVM(t, r.edge.chCalls(), []string{"vm.create", "vm.boot"}, "vm-a", "vm-b")
		r.waitRunning("vm-a", "vm-b")
	})
}

// TestStalePlanAfterSupersede is case (b): the site is re-planned (a new
// commit) while its plan runs, against the inventory from before the plan,
// so the new plan repeats a create already executed. Moving to the newer
// plan, the agent reports first, skips it as stale, and the re-plan from
// the fresh inventory runs; nothing is created or booted twice.
func TestStalePlanAfterSupersede(t *testing.T) {
	edgeBackends(t, func(t *testing.T, postgres bool) {
		r := newStaleRig(t, postgres)
		r.holdDownload("/vmlinux-vm-b")
		r.edge.start()
		r.edge.waitFirstHeartbeat()
		v0 := r.edge.inventory().Version
		r.gate.set(true)

		c1 := r.push("store-1: vm-a, vm-b", "vm-a", "vm-b")
		p1 := r.commitPlan(c1)
		if d := cmp.Diff([]string{"create vm-a", "create vm-b", "start vm-a", "start vm-b"}, ops(p1.Plan)); d != "" {
			t.Fatalf("plan 1 (-want +got):\n%s", d)
		}
		waitEdge(t, "create vm-b to be in flight", 20*time.Second, func() (bool, string) {
			return r.requested("/vmlinux-vm-b"), fmt.Sprint(r.edge.chCalls())
		})
		if c := r.edge.chCalls(); !slices.Contains(c, "vm-a vm.create 204") {
			t.Fatalf("vm-a not created before vm-b: %q", c)
		}

		c2 := r.push("store-1: vm-a, vm-b, vm-c", "vm-a", "vm-b", "vm-c")
		p2 := r.commitPlan(c2)
		if p2.Plan.InventoryVersion != v0 || !slices.Contains(ops(p2.Plan), "create vm-a") {
			t.Fatalf("plan 2 = %q against version %d, want one against %d repeating create vm-a", ops(p2.Plan), p2.Plan.InventoryVersion, v0)
		}
		waitEdge(t, "plan 1 to be superseded", 20*time.Second, func() (bool, string) {
			sp, err := r.env.Store().GetPlan(t.Context(), "acme", p1.Plan.ID)
			return err == nil && sp.Status == model.PlanSuperseded, fmt.Sprint(sp.Status, err)
		})
		r.release("/vmlinux-vm-b")
		r.holdUntilRefused(2, p2)
		r.gate.set(false)

		final := r.waitApplied(c2)
		r.assertMinimalExecution(final, []string{"create vm-c", "start vm-a", "start vm-b", "start vm-c"}, p2)
		sp1, _ := r.env.Store().GetPlan(t.Context(), "acme", p1.Plan.ID)
		var p1done []string
		for _, a := range sp1.Actions {
			if a.Status == model.ActionSucceeded {
				p1done = append(p1done, string(a.Action.Operation)+" "+a.Action.VM)
			}
		}
		if d := cmp.Diff([]string{"create vm-a", "create vm-b"}, p1done); d != "" {
			t.Errorf("plan 1 executed before it was superseded (-want +got):\n%s", d)
		}
		assertOncePerVM(t, r.edge.chCalls(), []string{"vm.create", "vm.boot"}, "vm-a", "vm-b", "vm-c")
		r.waitRunning("vm-a", "vm-b", "vm-c")
	})
}
