package reconciler_test

import (
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/reconciler"
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

// lockedLog collects log lines written from the loop's goroutines.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestReconcileLogsAtInfo: each reconcile the loop runs is one info line
// with the repository, commit, trigger, sites planned, actions and duration.
func TestReconcileLogsAtInfo(t *testing.T) {
	logs := &lockedLog{}
	e := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	runLoop(t, e.rec)
	e.git.Fleet("fleet", 1, 2)
	c := e.git.Commit("one site, two VMs")
	if _, err := e.rec.Trigger(t.Context(), tenant, e.repo.ID, ""); err != nil {
		t.Fatal(err)
	}
	want := []string{"msg=reconciled", "repo=fleet", "commit=" + c, "trigger=request", "sitesPlanned=1", "actions=4", "duration="}
	waitFor(t, "the reconcile's log line", func() bool { return strings.Contains(logs.String(), "msg=reconciled") })
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "msg=reconciled") {
			line = l
		}
	}
	for _, w := range want {
		if !strings.Contains(line, w) || !strings.Contains(line, "level=INFO") {
			t.Errorf("log line %q lacks %q", line, w)
		}
	}
}
