package reconciler_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/store"
)

// dyingStore is a real store whose RecordSitePlan starts failing after a
// number of calls: the reconcile stops half-way through the sites, as when
// the process is killed mid-reconcile.
type dyingStore struct {
	store.Store
	left atomic.Int64 // sites left before failing; negative = never fail
}

var errDied = errors.New("process died")

func (d *dyingStore) RecordSitePlan(ctx context.Context, actor store.Actor, tenant, repoID string, sd store.SiteDesired, p *model.Plan, now time.Time) (bool, error) {
	if d.left.Add(-1) < 0 && d.left.Load() > -1000 {
		return false, errDied
	}
	return d.Store.RecordSitePlan(ctx, actor, tenant, repoID, sd, p, now)
}

// RecordSitePlans records the records before the failing call, as the
// transactions committed before a kill, and fails.
func (d *dyingStore) RecordSitePlans(ctx context.Context, actor store.Actor, tenant, repoID string, recs []store.SitePlanRecord, now time.Time) ([]store.SitePlanResult, error) {
	n := d.left.Load()
	if n < 0 || n >= int64(len(recs)) {
		if n >= 0 {
			d.left.Add(-int64(len(recs)))
		}
		return d.Store.RecordSitePlans(ctx, actor, tenant, repoID, recs, now)
	}
	d.left.Store(0)
	if n > 0 {
		if _, err := d.Store.RecordSitePlans(ctx, actor, tenant, repoID, recs[:n], now); err != nil {
			return nil, err
		}
	}
	return nil, errDied
}

// TestInterruptedReconcileSummaryCoversEverySite: a commit whose first
// reconcile died after planning some of its sites is reconciled again; the
// nkudo/plan summary and the apply tracking cover every site the commit
// planned, not only those the second run had left to do (the "260 sites"
// of a 400-site commit after a kill -9).
func TestInterruptedReconcileSummaryCoversEverySite(t *testing.T) {
	sites := []string{"site-0001", "site-0002", "site-0003", "site-0004", "site-0005", "site-0006", "site-0007", "site-0008", "site-0009", "site-0010"}
	var d *dyingStore
	e := newEnv(t, sites, func(o *reconciler.Options) {
		d = &dyingStore{Store: o.Store}
		d.left.Store(4)
		o.Store = d
	})
	e.git.Fleet("fleet", len(sites), 1)
	c1 := e.git.Commit("ten sites")
	if _, err := e.reconcile(""); !errors.Is(err, errDied) {
		t.Fatalf("first reconcile: %v, want it to die half-way", err)
	}
	if n := len(e.plans()); n < 4 || n >= len(sites) {
		t.Fatalf("the interrupted run stored %d plans, want some but not all", n)
	}
	d.left.Store(-1 << 40) // the restarted process does not die
	res := e.mustReconcile()
	if len(res.Planned) != len(sites) {
		t.Errorf("resumed reconcile planned %d sites (%v), want all %d", len(res.Planned), res.Planned, len(sites))
	}
	st := e.status(c1, forge.ContextPlan)
	if st.State != store.StateSuccess || !strings.HasPrefix(st.Description, "10 sites:") {
		t.Errorf("nkudo/plan = %q (%s), want a summary of all 10 sites", st.Description, st.State)
	}
	if got := len(e.plans()); got != len(sites) {
		t.Errorf("%d plans stored, want one per site (planning again stores nothing twice)", got)
	}
	waitFor(t, "nkudo/apply to count every site", func() bool {
		return strings.Contains(e.status(c1, forge.ContextApply).Description, "of 10 sites")
	})
}
