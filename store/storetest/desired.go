package storetest

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// testDesiredState checks RecordSitePlan and DesiredState: a site's
// desired state is recorded with its plan in one transaction and read back
// with its documents, per tenant, from the newest record.
func testDesiredState(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r1, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r1", URL: "u1"}, "")
	must(t, err)
	r2, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r2", URL: "u2"}, "")
	must(t, err)

	_, err = s.DesiredState(ctx, tenantA, siteA)
	wantErr(t, err, store.ErrNotFound)

	doc := &model.Site{Name: siteA, Labels: map[string]string{"region": "eu"}}
	vms := []model.VirtualMachine{
		{Name: "vm-a", Site: siteA, Spec: model.VMSpec{State: model.VMRunning, CPUs: 2, MemoryMiB: 512}},
		{Name: "vm-b", Site: siteA, Labels: map[string]string{"tier": "db"}, Spec: model.VMSpec{State: model.VMStopped, CPUs: 1, MemoryMiB: 256}},
	}
	d := store.SiteDesired{Site: siteA, Hash: "h1", InventoryVersion: 3, Commit: "c1", UpdatedAt: epoch, Document: doc, VMs: vms}
	p := plan(tenantA, siteA, "1", "vm-a", "vm-b")
	stored, err := s.RecordSitePlan(ctx, admin, tenantA, r1.ID, d, &p, epoch)
	must(t, err)
	if !stored {
		t.Error("RecordSitePlan of a new plan: stored false")
	}
	if ap, err := s.ActivePlan(ctx, tenantA, siteA); err != nil || ap.Plan.ID != p.ID || ap.RepoID != r1.ID {
		t.Errorf("active plan after RecordSitePlan = %s from %q (%v), want %s from %s", ap.Plan.ID, ap.RepoID, err, p.ID, r1.ID)
	}
	// Recording the same plan again stores nothing new but still records.
	d.InventoryVersion = 4
	stored, err = s.RecordSitePlan(ctx, admin, tenantA, r1.ID, d, &p, epoch)
	must(t, err)
	if stored {
		t.Error("RecordSitePlan of an existing plan: stored true")
	}

	must(t, s.MarkCommitApplied(ctx, admin, tenantA, r1.ID, "c1", epoch))
	got, err := s.DesiredState(ctx, tenantA, siteA)
	must(t, err)
	want := store.DesiredState{
		SiteDesired: store.SiteDesired{Site: siteA, Hash: "h1", InventoryVersion: 4, Commit: "c1", UpdatedAt: epoch, Documented: true, Document: doc, VMs: vms},
		RepoID:      r1.ID, AppliedCommit: "c1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DesiredState (-want +got):\n%s", diff)
	}
	// The listing carries the key and the flag, not the documents.
	list, err := s.SiteDesired(ctx, tenantA, r1.ID)
	must(t, err)
	wantList := map[string]store.SiteDesired{siteA: {Site: siteA, Hash: "h1", InventoryVersion: 4, Commit: "c1", UpdatedAt: epoch, Documented: true}}
	if diff := cmp.Diff(wantList, list); diff != "" {
		t.Errorf("SiteDesired (-want +got):\n%s", diff)
	}

	labels, err := s.SiteLabels(ctx, tenantA)
	must(t, err)
	if diff := cmp.Diff(map[string]map[string]string{siteA: {"region": "eu"}}, labels); diff != "" {
		t.Errorf("SiteLabels (-want +got):\n%s", diff)
	}
	if labels, err := s.SiteLabels(ctx, tenantB); err != nil || len(labels) != 0 {
		t.Errorf("SiteLabels of another tenant = %v, %v; want none", labels, err)
	}

	// Another tenant sees nothing and cannot record into the repository.
	_, err = s.DesiredState(ctx, tenantB, siteA)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.RecordSitePlan(ctx, admin, tenantB, r1.ID, store.SiteDesired{Site: siteA}, nil, epoch)
	wantErr(t, err, store.ErrNotFound)

	// One transaction: a plan that cannot be stored (site not registered)
	// records no desired state either.
	ghost := plan(tenantA, "site-ghost", "1", "vm-a")
	_, err = s.RecordSitePlan(ctx, admin, tenantA, r1.ID, store.SiteDesired{Site: "site-ghost", Hash: "g"}, &ghost, epoch)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.DesiredState(ctx, tenantA, "site-ghost")
	wantErr(t, err, store.ErrNotFound)
	// ... and a desired state that cannot be recorded (unknown repository)
	// stores no plan.
	p2 := plan(tenantA, siteA, "2", "vm-c")
	_, err = s.RecordSitePlan(ctx, admin, tenantA, "no-such-repo", store.SiteDesired{Site: siteA}, &p2, epoch)
	wantErr(t, err, store.ErrNotFound)
	if _, err := s.GetPlan(ctx, tenantA, p2.ID); err == nil {
		t.Error("plan stored although its desired state was not recorded")
	}

	// Bad input names the field.
	for name, c := range map[string]struct {
		d store.SiteDesired
		p *model.Plan
	}{
		"no site":         {store.SiteDesired{Hash: "x"}, nil},
		"vm of elsewhere": {store.SiteDesired{Site: siteA, VMs: []model.VirtualMachine{{Name: "v", Site: siteB}}}, nil},
		"plan of another": {store.SiteDesired{Site: siteA}, &p2},
	} {
		if c.p != nil {
			other := *c.p
			other.Site = siteB
			c.p = &other
		}
		_, err := s.RecordSitePlan(ctx, admin, tenantA, r1.ID, c.d, c.p, epoch)
		if err == nil {
			t.Errorf("%s: RecordSitePlan accepted it", name)
			continue
		}
		wantErr(t, err, store.ErrInvalid)
	}

	// Without a plan (converged, or a site gone from git: no documents),
	// the newer record of the tenant's repositories answers.
	stored, err = s.RecordSitePlan(ctx, admin, tenantA, r2.ID, store.SiteDesired{Site: siteA, Hash: "", InventoryVersion: 5, Commit: "d1", UpdatedAt: epoch.Add(second)}, nil, epoch)
	must(t, err)
	if stored {
		t.Error("RecordSitePlan without a plan: stored true")
	}
	got, err = s.DesiredState(ctx, tenantA, siteA)
	must(t, err)
	want = store.DesiredState{
		SiteDesired: store.SiteDesired{Site: siteA, InventoryVersion: 5, Commit: "d1", UpdatedAt: epoch.Add(second), Documented: true, VMs: []model.VirtualMachine{}},
		RepoID:      r2.ID,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DesiredState of the newer record (-want +got):\n%s", diff)
	}
	// The labels follow the same record: the newer one has no document.
	if labels, err := s.SiteLabels(ctx, tenantA); err != nil || len(labels) != 0 {
		t.Errorf("SiteLabels after a newer record without a document = %v, %v; want none", labels, err)
	}

	// Deleting the repository drops its records.
	must(t, s.DeleteRepository(ctx, admin, tenantA, r2.ID))
	got, err = s.DesiredState(ctx, tenantA, siteA)
	if err != nil || got.RepoID != r1.ID {
		t.Errorf("DesiredState after deleting the newer repository = %q (%v), want %s", got.RepoID, err, r1.ID)
	}
}

// DesiredKeyUpgrade checks migration 0007 on a database that holds
// incremental keys as one "hash@inventoryVersion" string: after the
// upgrade each record has the hash and the inventory version as two
// fields, no documents (Documented false, so DesiredState does not answer
// from it), and its commit and time unchanged. The older schema is made by
// taking 0007 back out of a migrated database with ExecRaw.
func DesiredKeyUpgrade(t *testing.T, openDB OpenDatabase) {
	ctx := t.Context()
	reopen := openDB(t)
	s := reopen(nil, false)
	seed(t, s)
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, "")
	must(t, err)
	want := map[string]store.SiteDesired{
		siteA: {Site: siteA, Hash: "0123abcd", InventoryVersion: 42, Commit: "c1", UpdatedAt: epoch},
		siteB: {Site: siteB, Hash: "", InventoryVersion: 3, Commit: "c2", UpdatedAt: epoch.Add(second)}, // gone from git
	}
	for _, d := range want {
		d.Document = &model.Site{Name: d.Site}
		_, err := s.RecordSitePlan(ctx, admin, tenantA, r.ID, d, nil, epoch)
		must(t, err)
	}
	raw, ok := s.(Raw)
	if !ok {
		t.Fatalf("%T has no ExecRaw", s)
	}
	for _, q := range []string{
		`UPDATE site_desired SET hash = hash || '@' || CAST(inventory_version AS TEXT)`,
		`DROP INDEX site_desired_site`,
		`ALTER TABLE site_desired DROP COLUMN inventory_version`,
		`ALTER TABLE site_desired DROP COLUMN state`,
		`DELETE FROM schema_migrations WHERE version = 7`,
	} {
		if err := raw.ExecRaw(ctx, q); err != nil {
			t.Fatalf("take 0007 back out: %s: %v", q, err)
		}
	}

	s = reopen(nil, false)
	got, err := s.SiteDesired(ctx, tenantA, r.ID)
	must(t, err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records after the upgrade (-want +got):\n%s", diff)
	}
	_, err = s.DesiredState(ctx, tenantA, siteA)
	wantErr(t, err, store.ErrNotFound)
}

// testRecordSitePlans checks the batch form of RecordSitePlan (and
// ActivePlanIDs on the plans it stored): each record
// is recorded as RecordSitePlan would record it alone (a plan stored once,
// an older active plan superseded, a site not registered left out with
// ErrNotFound while the others are recorded), and a failure of any other
// kind records nothing of the batch.
func testRecordSitePlans(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r1, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r1", URL: "u1"}, "")
	must(t, err)
	vmA := []model.VirtualMachine{{Name: "vm-a", Site: siteA, Spec: model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256}}}
	pA1, pB1 := plan(tenantA, siteA, "1", "vm-a"), plan(tenantA, siteB, "1", "vm-b")
	ghost := plan(tenantA, "site-ghost", "1", "vm-g")
	recs := []store.SitePlanRecord{
		{Desired: store.SiteDesired{Site: siteA, Hash: "a1", InventoryVersion: 1, Commit: "c1", UpdatedAt: epoch, VMs: vmA}, Plan: &pA1},
		{Desired: store.SiteDesired{Site: "site-ghost", Hash: "g1", Commit: "c1", UpdatedAt: epoch}, Plan: &ghost},
		{Desired: store.SiteDesired{Site: siteB, Hash: "b1", InventoryVersion: 2, Commit: "c1", UpdatedAt: epoch}, Plan: &pB1},
		{Desired: store.SiteDesired{Site: "site-gone", Commit: "c1", UpdatedAt: epoch}},
	}
	res, err := s.RecordSitePlans(ctx, admin, tenantA, r1.ID, recs, epoch)
	must(t, err)
	if len(res) != len(recs) {
		t.Fatalf("RecordSitePlans answered %d results for %d records", len(res), len(recs))
	}
	if !res[0].Stored || res[0].Err != nil || !res[2].Stored || res[2].Err != nil {
		t.Errorf("new plans: results %+v, want stored without error", res)
	}
	if !errors.Is(res[1].Err, store.ErrNotFound) || res[1].Stored {
		t.Errorf("plan of a site not registered: %+v, want ErrNotFound", res[1])
	}
	if res[3].Stored || res[3].Err != nil {
		t.Errorf("record without a plan: %+v, want not stored, no error", res[3])
	}
	list, err := s.SiteDesired(ctx, tenantA, r1.ID)
	must(t, err)
	wantList := map[string]store.SiteDesired{
		siteA:       {Site: siteA, Hash: "a1", InventoryVersion: 1, Commit: "c1", UpdatedAt: epoch, Documented: true},
		siteB:       {Site: siteB, Hash: "b1", InventoryVersion: 2, Commit: "c1", UpdatedAt: epoch, Documented: true},
		"site-gone": {Site: "site-gone", Commit: "c1", UpdatedAt: epoch, Documented: true},
	}
	if diff := cmp.Diff(wantList, list); diff != "" {
		t.Errorf("SiteDesired after the batch (-want +got):\n%s", diff)
	}
	for _, p := range []model.Plan{pA1, pB1} {
		if ap, err := s.ActivePlan(ctx, tenantA, p.Site); err != nil || ap.Plan.ID != p.ID || ap.RepoID != r1.ID {
			t.Errorf("active plan of %s = %s from %q (%v), want %s from %s", p.Site, ap.Plan.ID, ap.RepoID, err, p.ID, r1.ID)
		}
	}

	// The same plans again: nothing stored twice. A new plan for siteA
	// supersedes the older one, as StorePlan does.
	pA2 := plan(tenantA, siteA, "2", "vm-a", "vm-x")
	res, err = s.RecordSitePlans(ctx, admin, tenantA, r1.ID, []store.SitePlanRecord{
		{Desired: store.SiteDesired{Site: siteB, Hash: "b1", InventoryVersion: 3, Commit: "c2", UpdatedAt: epoch}, Plan: &pB1},
		{Desired: store.SiteDesired{Site: siteA, Hash: "a2", InventoryVersion: 1, Commit: "c2", UpdatedAt: epoch}, Plan: &pA2},
	}, epoch)
	must(t, err)
	if res[0].Stored || res[0].Err != nil || !res[1].Stored || res[1].Err != nil {
		t.Errorf("second batch: results %+v, want [not stored, stored]", res)
	}
	old, err := s.GetPlan(ctx, tenantA, pA1.ID)
	must(t, err)
	if old.Status != model.PlanSuperseded || old.SupersededBy != pA2.ID {
		t.Errorf("older plan of %s: %s superseded by %q, want superseded by %s", siteA, old.Status, old.SupersededBy, pA2.ID)
	}

	// A site twice in one batch: the later record wins.
	_, err = s.RecordSitePlans(ctx, admin, tenantA, r1.ID, []store.SitePlanRecord{
		{Desired: store.SiteDesired{Site: siteB, Hash: "b-x", Commit: "c2", UpdatedAt: epoch}},
		{Desired: store.SiteDesired{Site: siteB, Hash: "b-y", Commit: "c2", UpdatedAt: epoch}},
	}, epoch)
	must(t, err)
	if list, err := s.SiteDesired(ctx, tenantA, r1.ID); err != nil || list[siteB].Hash != "b-y" {
		t.Errorf("%s recorded twice in one batch: hash %q (%v), want the later b-y", siteB, list[siteB].Hash, err)
	}

	// One transaction: a plan that conflicts (its ID belongs to another
	// site) records nothing of the batch, not even the records before it.
	pA3 := plan(tenantA, siteA, "3", "vm-y")
	stolen := pA2
	stolen.Site = siteB
	_, err = s.RecordSitePlans(ctx, admin, tenantA, r1.ID, []store.SitePlanRecord{
		{Desired: store.SiteDesired{Site: siteA, Hash: "a3", Commit: "c3", UpdatedAt: epoch}, Plan: &pA3},
		{Desired: store.SiteDesired{Site: siteB, Hash: "b3", Commit: "c3", UpdatedAt: epoch}, Plan: &stolen},
	}, epoch)
	wantErr(t, err, store.ErrConflict)
	if _, err := s.GetPlan(ctx, tenantA, pA3.ID); err == nil {
		t.Error("a failed batch stored a plan")
	}
	if list, err := s.SiteDesired(ctx, tenantA, r1.ID); err != nil || list[siteA].Hash != "a2" {
		t.Errorf("a failed batch changed %s's record to %q (%v), want a2", siteA, list[siteA].Hash, err)
	}

	// An unknown repository, or another tenant's, records nothing.
	_, err = s.RecordSitePlans(ctx, admin, tenantA, "no-such-repo", []store.SitePlanRecord{{Desired: store.SiteDesired{Site: siteA}, Plan: &pA3}}, epoch)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.RecordSitePlans(ctx, admin, tenantB, r1.ID, []store.SitePlanRecord{{Desired: store.SiteDesired{Site: siteA}}}, epoch)
	wantErr(t, err, store.ErrNotFound)
	if _, err := s.GetPlan(ctx, tenantA, pA3.ID); err == nil {
		t.Error("a batch for an unknown repository stored a plan")
	}

	// Bad input names the record and the field.
	_, err = s.RecordSitePlans(ctx, admin, tenantA, r1.ID, []store.SitePlanRecord{
		{Desired: store.SiteDesired{Site: siteA, Hash: "a4"}},
		{Desired: store.SiteDesired{Hash: "x"}},
	}, epoch)
	wantErr(t, err, store.ErrInvalid)
	if !strings.Contains(err.Error(), "records[1]") || !strings.Contains(err.Error(), "site is required") {
		t.Errorf("error %q does not name records[1] and its field", err)
	}

	// ActivePlanIDs lists the repository's pending and in-progress plans,
	// not the superseded ones, per tenant.
	ids, err := s.ActivePlanIDs(ctx, tenantA, r1.ID)
	must(t, err)
	if diff := cmp.Diff(map[string]string{pA2.ID: siteA, pB1.ID: siteB}, ids); diff != "" {
		t.Errorf("ActivePlanIDs (-want +got):\n%s", diff)
	}
	_, err = s.SupersedeActivePlan(ctx, admin, tenantA, siteB, "c9", "test", epoch)
	must(t, err)
	ids, err = s.ActivePlanIDs(ctx, tenantA, r1.ID)
	must(t, err)
	if diff := cmp.Diff(map[string]string{pA2.ID: siteA}, ids); diff != "" {
		t.Errorf("ActivePlanIDs after superseding %s's plan (-want +got):\n%s", siteB, diff)
	}
	if ids, err := s.ActivePlanIDs(ctx, tenantB, r1.ID); err != nil || len(ids) != 0 {
		t.Errorf("ActivePlanIDs of another tenant = %v (%v), want none", ids, err)
	}
}
