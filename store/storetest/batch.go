package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// batchSites is more than a multi-row statement takes at once, so a batch
// of them is written in several chunks.
const batchSites = 520

// testRecordSitePlansBatch checks that RecordSitePlans leaves a store
// exactly as RecordSitePlan, called once per record in the same order,
// leaves another: the same answers, plans, actions, statuses, supersessions,
// desired state and audit events, through rounds that store new plans,
// store plans again, supersede plans, revive superseded ones (with and
// without finished actions), and name sites that are not registered.
func testRecordSitePlansBatch(t *testing.T, open Open) {
	ctx := t.Context()
	batch, single := open(t), open(t)
	var repos [2]store.Repository
	for k, s := range []store.Store{batch, single} {
		must2(s.CreateTenant(ctx, admin, store.Tenant{ID: tenantA}))(t)
		for i := range batchSites {
			must2(s.CreateSite(ctx, admin, tenantA, batchSite(i)))(t)
		}
		r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "fleet", URL: "u"}, "")
		must(t, err)
		repos[k] = r
	}
	round := func(n int, recs []store.SitePlanRecord) {
		t.Helper()
		now := epoch.Add(time.Duration(n) * time.Minute)
		got, err := batch.RecordSitePlans(ctx, admin, tenantA, repos[0].ID, recs, now)
		if err != nil {
			t.Fatalf("round %d: RecordSitePlans: %v", n, err)
		}
		for i, rec := range recs {
			stored, err := single.RecordSitePlan(ctx, admin, tenantA, repos[1].ID, rec.Desired, rec.Plan, now)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("round %d: RecordSitePlan(%s): %v", n, rec.Desired.Site, err)
			}
			if got[i].Stored != stored || errors.Is(got[i].Err, store.ErrNotFound) != errors.Is(err, store.ErrNotFound) {
				t.Errorf("round %d: %s: batch answered stored=%v err=%v, one by one stored=%v err=%v",
					n, rec.Desired.Site, got[i].Stored, got[i].Err, stored, err)
			}
		}
		compareStores(t, n, batch, single, repos)
	}
	// finish records one action's result on both stores.
	finish := func(p model.Plan, action int) {
		t.Helper()
		for _, s := range []store.Store{batch, single} {
			_, err := s.RecordActionResult(ctx, agent, tenantA, p.Site, store.ActionResult{
				PlanID: p.ID, ActionID: p.Actions[action].ID, Status: model.ActionSucceeded,
				StartedAt: epoch, FinishedAt: epoch.Add(second),
			})
			must(t, err)
		}
	}

	first := make([]model.Plan, batchSites)
	var recs []store.SitePlanRecord
	for i := range batchSites {
		first[i] = batchPlan(i, "1", 1+i%2)
		recs = append(recs, batchRecord(i, "1", &first[i]))
	}
	ghost := plan(tenantA, "site-ghost", "1", "vm-g")
	recs = append(recs, store.SitePlanRecord{Desired: store.SiteDesired{Site: "site-ghost", Hash: "g"}, Plan: &ghost},
		store.SitePlanRecord{Desired: store.SiteDesired{Site: "site-gone", Hash: ""}})
	round(1, recs)

	// One action of site 1's and site 3's plans done: in progress.
	finish(first[1], 0)
	finish(first[3], 0)
	// Every third site gets a new plan, superseding its first; every
	// third again stores its first plan (already stored: nothing to do),
	// the rest record desired state only.
	next := make([]model.Plan, batchSites)
	recs = nil
	for i := range batchSites {
		switch i % 3 {
		case 0:
			next[i] = batchPlan(i, "2", 2)
			recs = append(recs, batchRecord(i, "2", &next[i]))
		case 1:
			recs = append(recs, batchRecord(i, "1", &first[i]))
		default:
			recs = append(recs, batchRecord(i, "2", nil))
		}
	}
	slices.Reverse(recs) // not in the order of the sites: the audit events follow the records
	round(2, recs)

	// The first plans of every third site wanted again: revived (site 3's
	// in progress, with its finished action kept), superseding the second.
	recs = nil
	for i := 0; i < batchSites; i += 3 {
		recs = append(recs, batchRecord(i, "3", &first[i]))
	}
	round(3, recs)
	if p, err := batch.GetPlan(ctx, tenantA, first[3].ID); err != nil || p.Status != model.PlanInProgress {
		t.Errorf("revived plan with a finished action: %s (%v), want %s", p.Status, err, model.PlanInProgress)
	}
	if v, err := batch.VerifyAudit(ctx); err != nil || v.FirstBroken != 0 {
		t.Errorf("audit chain after batches: %+v (%v)", v, err)
	}
}

func batchSite(i int) string { return fmt.Sprintf("site-%03d", i) }

// batchPlan is a plan for batchSite(i) that creates vms VMs.
func batchPlan(i int, tag string, vms int) model.Plan {
	var names []string
	for v := range vms {
		names = append(names, fmt.Sprintf("vm-%d", v))
	}
	return plan(tenantA, batchSite(i), tag, names...)
}

func batchRecord(i int, tag string, p *model.Plan) store.SitePlanRecord {
	return store.SitePlanRecord{
		Desired: store.SiteDesired{Site: batchSite(i), Hash: "h" + tag, InventoryVersion: 1, Commit: "c-" + tag,
			VMs: []model.VirtualMachine{{Name: "vm-0", Site: batchSite(i), Spec: model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256}}}},
		Plan: p,
	}
}

// compareStores fails t where the two stores' plans, desired state or
// audit events differ (times of the store's own clock aside).
func compareStores(t *testing.T, round int, a, b store.Store, repos [2]store.Repository) {
	t.Helper()
	ctx := t.Context()
	var plans [2][]store.StoredPlan
	var desired [2]map[string]store.SiteDesired
	var audit [2][]store.AuditEvent
	for k, s := range []store.Store{a, b} {
		var err error
		plans[k], err = s.ListPlans(ctx, tenantA, store.PlanFilter{Limit: 10 * batchSites, WithActions: true})
		must(t, err)
		for i := range plans[k] {
			plans[k][i].RepoID = "" // the two repositories' IDs differ
			if plans[k][i].UpdatedAt.After(epoch.Add(time.Hour)) {
				plans[k][i].UpdatedAt = time.Time{} // a result's time, from the store's clock
			}
		}
		desired[k], err = s.SiteDesired(ctx, tenantA, repos[k].ID)
		must(t, err)
		for site, d := range desired[k] {
			d.UpdatedAt = time.Time{} // a record without a time gets the store's clock
			desired[k][site] = d
		}
		events, err := s.ListAudit(ctx, tenantA, 0, 100*batchSites)
		must(t, err)
		for _, e := range events {
			// The two repositories' IDs differ.
			detail := strings.ReplaceAll(string(e.Detail), repos[k].ID, "<repo>")
			object := strings.ReplaceAll(e.Object, repos[k].ID, "<repo>")
			audit[k] = append(audit[k], store.AuditEvent{Actor: e.Actor, Action: e.Action, Object: object, Detail: []byte(detail)})
		}
	}
	if len(plans[0]) == 0 {
		t.Fatalf("round %d: no plans stored", round)
	}
	if d := cmp.Diff(plans[1], plans[0]); d != "" {
		t.Errorf("round %d: plans, one by one (-) and batched (+):\n%s", round, d)
	}
	if d := cmp.Diff(desired[1], desired[0]); d != "" {
		t.Errorf("round %d: desired state, one by one (-) and batched (+):\n%s", round, d)
	}
	if d := cmp.Diff(audit[1], audit[0]); d != "" {
		t.Errorf("round %d: audit events, one by one (-) and batched (+):\n%s", round, d)
	}
}
