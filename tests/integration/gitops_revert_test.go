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

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler/gittest"
)

// artifactVMs serves a fake kernel and root disk over HTTP and returns a
// function writing a VirtualMachine manifest of site that boots them.
func artifactVMs(t *testing.T, site string) func(name, state string) string {
	files := map[string][]byte{"/vmlinux": []byte("fake kernel"), "/root.raw": []byte("fake root disk")}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	digest := func(p string) string { sum := sha256.Sum256(files[p]); return hex.EncodeToString(sum[:]) }
	return func(name, state string) string {
		return fmt.Sprintf(`apiVersion: nkudo.io/v1alpha1
kind: VirtualMachine
metadata:
  name: %s
  site: %s
spec:
  state: %s
  cpus: 1
  memoryMiB: 256
  image:
    url: %s/root.raw
    sha256: %s
  kernel:
    url: %[4]s/vmlinux
    sha256: %[6]s
    cmdline: console=ttyS0
`, name, site, state, srv.URL, digest("/root.raw"), digest("/vmlinux"))
	}
}

// TestGitOpsRevertBeforeApply: commit A deletes a VM, its plan waits (the
// agent is down), commit B reverts A. When the agent comes back nothing of
// A runs: the VM is not stopped or deleted, A's nkudo/apply says it was
// superseded, and a later commit runs normally.
func TestGitOpsRevertBeforeApply(t *testing.T) {
	const site = "store-042"
	g := startGitOps(t, gitopsConfig{edgeSite: site})
	vm := artifactVMs(t, site)
	manifest := func(vms ...string) string { return gittest.Site(site) + "---\n" + strings.Join(vms, "---\n") }
	two := manifest(vm("pos-1", "Running"), vm("pos-2", "Running"))
	g.git.Write("manifests/store-042.yaml", two)
	c1 := g.git.Commit("two POS VMs")
	g.push("d-1", "", c1)
	g.edge.start()
	g.waitApplied(c1)
	g.edge.stop()

	g.git.Write("manifests/store-042.yaml", manifest(vm("pos-1", "Running")))
	a := g.git.Commit("drop pos-2")
	g.push("d-a", "", a)
	var planA string
	eventually(t, "A's plan pending", func() bool {
		for _, p := range g.plans() {
			if p.Plan.Commit == a && p.Status == model.PlanPending {
				planA = p.Plan.ID
				return true
			}
		}
		return false
	})

	g.git.Write("manifests/store-042.yaml", two)
	b := g.git.Commit("revert: keep pos-2")
	g.push("d-b", "", b)
	eventually(t, "A's plan superseded", func() bool {
		for _, p := range g.plans() {
			if p.Plan.ID == planA {
				return p.Status == model.PlanSuperseded
			}
		}
		return false
	})
	eventually(t, "A's nkudo/apply says superseded", func() bool {
		st, desc := g.forgeState(a, "nkudo/apply")
		return st == "error" && strings.Contains(desc, "superseded by "+b[:12])
	})
	// B's statuses are posted by its own reconcile, which may finish after
	// A's status was rewritten: wait for it, and let it be nothing but success.
	eventually(t, "B's nkudo/apply says success (nothing to apply)", func() bool {
		st, desc := g.forgeState(b, "nkudo/apply")
		if st != "" && st != "pending" && st != "success" {
			t.Fatalf("nkudo/apply of B = %s %q, want success (nothing to apply)", st, desc)
		}
		return st == "success"
	})

	// The agent comes back. A later commit (stop pos-1) runs, which shows
	// the agent has been through its plans since.
	g.edge.start()
	g.git.Write("manifests/store-042.yaml", manifest(vm("pos-1", "Stopped"), vm("pos-2", "Running")))
	c := g.git.Commit("stop pos-1")
	g.push("d-c", "", c)
	g.waitApplied(c)
	calls := g.edge.chCalls()
	for _, call := range calls {
		if strings.HasPrefix(call, "pos-2 ") && (strings.Contains(call, "vm.delete") || strings.Contains(call, "vm.shutdown") || strings.Contains(call, "vm.power-button")) {
			t.Errorf("pos-2 was touched after the revert: %q", call)
		}
	}
	if !slices.ContainsFunc(calls, func(s string) bool {
		return strings.HasPrefix(s, "pos-1 vm.shutdown") || strings.HasPrefix(s, "pos-1 vm.power-button")
	}) {
		t.Errorf("the later commit did not run: calls %v", calls)
	}
	full, err := g.acme.Client.GetPlan(t.Context(), planA)
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Actions) == 0 {
		t.Errorf("A's plan %s has no actions, want pos-2's removal", planA)
	}
	for _, ac := range full.Actions {
		if ac.Status != model.ActionPending {
			t.Errorf("A's action %s %s is %s, want pending (never started)", ac.Action.Operation, ac.Action.VM, ac.Status)
		}
	}
	eventually(t, "pos-2 still running at the edge", func() bool {
		vms, err := g.acme.Client.SiteVMs(t.Context(), site)
		if err != nil {
			return false
		}
		for _, v := range vms.VMs {
			if v.Name == "pos-2" {
				return v.Actual != nil && v.Actual.State == model.VMRunning
			}
		}
		return false
	})
}
