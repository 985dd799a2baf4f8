package reconciler_test

import (
	"strings"
	"testing"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/store"
)

// TestPlanStatusCountsOnlyRegisteredSites: nkudo/plan counts the sites it
// planned; sites in git that are not registered are named apart, not
// counted among them.
func TestPlanStatusCountsOnlyRegisteredSites(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	e.git.Fleet("fleet", 3, 1)
	c := e.git.Commit("three sites, one registered")
	e.mustReconcile()
	st := e.status(c, forge.ContextPlan)
	if st.State != store.StateSuccess || !strings.HasPrefix(st.Description, "1 site: 1 create, 1 start") ||
		!strings.HasSuffix(st.Description, "; not registered: site-0002, site-0003") {
		t.Errorf("nkudo/plan = %s %q, want 1 site planned and site-0002, site-0003 named as not registered", st.State, st.Description)
	}
}
