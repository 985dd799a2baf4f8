package reconciler_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// netbirdSite is a Site manifest asking for NetBird groups.
func netbirdSite(name string, groups ...string) string {
	return fmt.Sprintf(`apiVersion: nkudo.io/v1alpha1
kind: Site
metadata:
  name: %s
spec:
  netbird:
    groups: [%s]
`, name, strings.Join(groups, ", "))
}

// TestNetBirdGroupsOnlyCommitNamesTheChange: a commit that changes only a
// Site's NetBird groups stores no plan for the agent, keeps the site
// converged, records the new desired state (the NetBird sync applies it)
// and names the change in nkudo/plan.
func TestNetBirdGroupsOnlyCommitNamesTheChange(t *testing.T) {
	const site = "site-0001"
	e := newEnv(t, []string{site}, nil)
	runLoop(t, e.rec)
	vm := gittest.VM(site, "vm-01", "Running", 1)
	e.git.Write("fleet/site-0001.yaml", netbirdSite(site, "pos")+"---\n"+vm)
	first := e.git.Commit("site with one group")
	r1 := e.mustReconcile()
	if len(r1.Stored) != 1 {
		t.Fatalf("first commit stored %d plans, want 1", len(r1.Stored))
	}
	if st := e.status(first, forge.ContextPlan); st.Description != "1 site: 1 create, 1 start, netbird groups +pos; 1 awaiting report" {
		t.Errorf("nkudo/plan of the first commit = %q, want the VM and the new group", st.Description)
	}
	e.converge(site, desiredVMs([]string{site}, 1, model.VMRunning), "")

	e.git.Write("fleet/site-0001.yaml", netbirdSite(site, "pos", "ot-gateways")+"---\n"+vm)
	c := e.git.Commit("join ot-gateways")
	res := e.mustReconcile()
	if len(res.Stored) != 0 {
		t.Errorf("groups-only commit stored %d plans, want none", len(res.Stored))
	}
	const want = "1 site: netbird groups +ot-gateways"
	if res.Summary != want {
		t.Errorf("summary = %q, want %q", res.Summary, want)
	}
	if st := e.status(c, forge.ContextPlan); st.State != store.StateSuccess || st.Description != want {
		t.Errorf("nkudo/plan = %+v, want success %q", st, want)
	}
	if st := e.status(c, forge.ContextApply); st.State != store.StateSuccess {
		t.Errorf("nkudo/apply = %+v, want success (nothing for the agent to apply)", st)
	}
	if _, err := e.st.ActivePlan(t.Context(), tenant, site); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("active plan after a groups-only commit: %v, want none", err)
	}
	d, err := e.st.DesiredState(t.Context(), tenant, site)
	if err != nil {
		t.Fatal(err)
	}
	if d.Commit != c || d.Document == nil || d.Document.Spec.NetBird == nil || !slices.Equal(d.Document.Spec.NetBird.Groups, []string{"pos", "ot-gateways"}) {
		t.Errorf("desired state = commit %s, %+v; want commit %s with both groups", d.Commit, d.Document, c)
	}
}
