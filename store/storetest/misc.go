package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

func testLogs(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	p := plan(tenantA, siteA, "1", "vm-a")
	must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	a := p.Actions[0].ID
	line := func(seq int64, text string) store.LogLine {
		return store.LogLine{PlanID: p.ID, ActionID: a, Seq: seq, Time: epoch.Add(time.Duration(seq) * time.Millisecond), Stream: store.StreamStdout, Line: text}
	}
	n, err := s.AppendLogs(ctx, tenantA, siteA, []store.LogLine{line(1, "one"), line(2, "two"), line(4, "four")})
	must(t, err)
	if n != 3 {
		t.Errorf("first batch inserted %d, want 3", n)
	}
	n, err = s.AppendLogs(ctx, tenantA, siteA, []store.LogLine{line(2, "two again"), line(3, "three")})
	must(t, err)
	if n != 1 {
		t.Errorf("batch with a duplicate inserted %d, want 1", n)
	}
	_, err = s.AppendLogs(ctx, tenantA, siteB, []store.LogLine{line(9, "wrong site")})
	wantErr(t, err, store.ErrNotFound)
	_, err = s.AppendLogs(ctx, tenantB, siteA, []store.LogLine{line(9, "wrong tenant")})
	wantErr(t, err, store.ErrNotFound)
	_, err = s.AppendLogs(ctx, tenantA, siteA, []store.LogLine{{PlanID: p.ID, Seq: 0, Line: "x"}})
	wantErr(t, err, store.ErrInvalid)

	got, err := s.Logs(ctx, tenantA, p.ID, 0, 0)
	must(t, err)
	want := []store.LogLine{line(1, "one"), line(2, "two"), line(3, "three"), line(4, "four")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Logs (-want +got):\n%s", diff)
	}
	got, err = s.Logs(ctx, tenantA, p.ID, 2, 1)
	must(t, err)
	if diff := cmp.Diff(want[2:3], got); diff != "" {
		t.Errorf("Logs(after 2, limit 1) (-want +got):\n%s", diff)
	}
	_, err = s.Logs(ctx, tenantB, p.ID, 0, 0)
	wantErr(t, err, store.ErrNotFound)

	// Gaps are visible to the reader.
	must2(s.AppendLogs(ctx, tenantA, siteA, []store.LogLine{line(7, "seven"), line(10, "ten")}))(t)
	got, err = s.Logs(ctx, tenantA, p.ID, 4, 0)
	must(t, err)
	if diff := cmp.Diff([][2]int64{{5, 6}, {8, 9}}, store.Gaps(got, 4)); diff != "" {
		t.Errorf("Gaps (-want +got):\n%s", diff)
	}

	// Following: a subscriber is woken by new lines.
	ch, cancel := s.Subscribe(ctx, store.LogTopic(p.ID))
	defer cancel()
	must2(s.AppendLogs(ctx, tenantA, siteA, []store.LogLine{line(11, "eleven")}))(t)
	if !woken(ch) {
		t.Error("log subscriber not woken by AppendLogs")
	}
}

// testLogBounds: AppendLogsWithin keeps a plan's and a site's log within
// their byte quotas, closes a plan's log at the first line dropped (so what
// is stored has no holes), counts what it drops, charges a resent line
// nothing; LogSeqs reads sequence numbers only; LogPage stops at its byte
// bound and says more is left.
func testLogBounds(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	p1 := plan(tenantA, siteA, "1", "vm-a")
	p2 := plan(tenantA, siteA, "2", "vm-b")
	for _, p := range []model.Plan{p1, p2} {
		must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	}
	line := func(p model.Plan, seq int64, size int) store.LogLine {
		return store.LogLine{PlanID: p.ID, Seq: seq, Time: epoch, Stream: store.StreamStdout, Line: strings.Repeat("x", size)}
	}
	cost := int64(100 + store.LogLineOverhead)
	// Plan quota: three 100-byte lines fit, the fourth does not.
	q := store.LogQuota{PlanBytes: 3 * cost, SiteBytes: 5 * cost}
	r, err := s.AppendLogsWithin(ctx, tenantA, siteA, []store.LogLine{line(p1, 1, 100), line(p1, 2, 100)}, q)
	must(t, err)
	if r.Inserted != 2 || r.Dropped != 0 || r.Over != nil {
		t.Errorf("within quota: %+v", r)
	}
	// A resend of line 2 costs nothing; 3 fits; 4 and 5 are dropped.
	r, err = s.AppendLogsWithin(ctx, tenantA, siteA, []store.LogLine{line(p1, 2, 100), line(p1, 3, 100), line(p1, 4, 100), line(p1, 5, 1)}, q)
	must(t, err)
	if diff := cmp.Diff(store.LogAppend{Inserted: 1, Dropped: 2, Over: map[string]store.LogQuotaScope{p1.ID: store.LogQuotaPlan}}, r); diff != "" {
		t.Errorf("over the plan quota (-want +got):\n%s", diff)
	}
	// The log stays closed, even for a line that would fit.
	r, err = s.AppendLogsWithin(ctx, tenantA, siteA, []store.LogLine{line(p1, 6, 0)}, store.LogQuota{})
	must(t, err)
	if r.Inserted != 0 || r.Dropped != 1 || r.Over[p1.ID] != store.LogQuotaPlan {
		t.Errorf("closed log: %+v", r)
	}
	u, err := s.LogUsage(ctx, tenantA, p1.ID)
	must(t, err)
	if diff := cmp.Diff(store.LogUsage{Bytes: 3 * cost, DroppedLines: 3, DroppedBytes: 101, Closed: store.LogQuotaPlan}, u); diff != "" {
		t.Errorf("LogUsage (-want +got):\n%s", diff)
	}
	// Site quota: the site holds 3 lines of p1, so p2 gets two more.
	r, err = s.AppendLogsWithin(ctx, tenantA, siteA, []store.LogLine{line(p2, 1, 100), line(p2, 2, 100), line(p2, 3, 100)}, q)
	must(t, err)
	if diff := cmp.Diff(store.LogAppend{Inserted: 2, Dropped: 1, Over: map[string]store.LogQuotaScope{p2.ID: store.LogQuotaSite}}, r); diff != "" {
		t.Errorf("over the site quota (-want +got):\n%s", diff)
	}
	// Empty lines are bounded too: each costs the overhead.
	p3 := plan(tenantA, siteB, "3", "vm-c")
	must2(s.StorePlan(ctx, admin, p3, "", epoch))(t)
	var empties []store.LogLine
	for i := range 10 {
		empties = append(empties, line(p3, int64(i+1), 0))
	}
	r, err = s.AppendLogsWithin(ctx, tenantA, siteB, empties, store.LogQuota{PlanBytes: 4 * store.LogLineOverhead})
	must(t, err)
	if r.Inserted != 4 || r.Dropped != 6 {
		t.Errorf("empty lines: %+v, want 4 inserted and 6 dropped", r)
	}

	// LogSeqs reads the numbers in a range; LogPage pages by bytes.
	seqs, err := s.LogSeqs(ctx, tenantA, p1.ID, 1, 10)
	must(t, err)
	if diff := cmp.Diff([]int64{2, 3}, seqs); diff != "" {
		t.Errorf("LogSeqs (-want +got):\n%s", diff)
	}
	_, err = s.LogSeqs(ctx, tenantB, p1.ID, 0, 10)
	wantErr(t, err, store.ErrNotFound)
	page, more, err := s.LogPage(ctx, tenantA, p1.ID, 0, 0, 250)
	must(t, err)
	if len(page) != 2 || !more {
		t.Errorf("page of 250 bytes: %d lines, more %v; want 2 lines and more", len(page), more)
	}
	page, more, err = s.LogPage(ctx, tenantA, p1.ID, page[len(page)-1].Seq, 0, 250)
	must(t, err)
	if len(page) != 1 || page[0].Seq != 3 || more {
		t.Errorf("next page: %d lines, more %v; want line 3 and no more", len(page), more)
	}
	// A line longer than the bound still comes, alone.
	page, more, err = s.LogPage(ctx, tenantA, p1.ID, 0, 0, 10)
	must(t, err)
	if len(page) != 1 || !more {
		t.Errorf("page of 10 bytes: %d lines, more %v; want 1 line and more", len(page), more)
	}
	page, more, err = s.LogPage(ctx, tenantA, p1.ID, 0, 2, 0)
	must(t, err)
	if len(page) != 2 || !more {
		t.Errorf("page of 2 lines: %d lines, more %v; want 2 and more", len(page), more)
	}
	_, _, err = s.LogPage(ctx, tenantB, p1.ID, 0, 0, 0)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.LogUsage(ctx, tenantB, p1.ID)
	wantErr(t, err, store.ErrNotFound)
}

func testCommitStatuses(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, "")
	must(t, err)
	cs := store.CommitStatus{RepoID: r.ID, Commit: "c1", Context: "nkudo/plan", State: store.StatePending, Description: "planning", TargetURL: "https://cp/c1", UpdatedAt: epoch}
	_, err = s.SetCommitStatus(ctx, tenantB, cs)
	wantErr(t, err, store.ErrNotFound)
	bad := cs
	bad.State = "weird"
	_, err = s.SetCommitStatus(ctx, tenantA, bad)
	wantErr(t, err, store.ErrInvalid)

	changed, err := s.SetCommitStatus(ctx, tenantA, cs)
	must(t, err)
	if !changed {
		t.Error("first SetCommitStatus not changed")
	}
	changed, err = s.SetCommitStatus(ctx, tenantA, cs)
	must(t, err)
	if changed {
		t.Error("identical SetCommitStatus reported changed")
	}
	must2(s.SetCommitStatus(ctx, tenantA, store.CommitStatus{RepoID: r.ID, Commit: "c1", Context: "nkudo/validate", State: store.StateSuccess, UpdatedAt: epoch}))(t)
	must2(s.SetCommitStatus(ctx, tenantA, store.CommitStatus{RepoID: r.ID, Commit: "c2", Context: "nkudo/validate", State: store.StateFailure, UpdatedAt: epoch}))(t)

	un, err := s.UnpostedCommitStatuses(ctx, 0)
	must(t, err)
	if len(un) != 3 {
		t.Errorf("unposted = %d, want 3", len(un))
	}
	must(t, s.MarkCommitStatusPosted(ctx, tenantA, cs, epoch.Add(second)))
	got, err := s.CommitStatuses(ctx, tenantA, r.ID, "c1")
	must(t, err)
	want := []store.CommitStatus{
		{Tenant: tenantA, RepoID: r.ID, Commit: "c1", Context: "nkudo/plan", State: store.StatePending, Description: "planning",
			TargetURL: "https://cp/c1", UpdatedAt: epoch, Posted: true, PostedAt: epoch.Add(second)},
		{Tenant: tenantA, RepoID: r.ID, Commit: "c1", Context: "nkudo/validate", State: store.StateSuccess, UpdatedAt: epoch},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CommitStatuses (-want +got):\n%s", diff)
	}
	// A new state un-posts it; marking the old state posted does not post the new one.
	cs2 := cs
	cs2.State, cs2.Description, cs2.UpdatedAt = store.StateSuccess, "3 sites: 2 create", epoch.Add(2*second)
	changed, err = s.SetCommitStatus(ctx, tenantA, cs2)
	must(t, err)
	if !changed {
		t.Error("state change not reported")
	}
	must(t, s.MarkCommitStatusPosted(ctx, tenantA, cs, epoch.Add(3*second)))
	got, _ = s.CommitStatuses(ctx, tenantA, r.ID, "c1")
	if got[0].Posted || got[0].State != store.StateSuccess {
		t.Errorf("after stale post: %+v", got[0])
	}
	wantErr(t, s.MarkCommitStatusPosted(ctx, tenantB, cs, epoch), store.ErrNotFound)
	testCommitStatusOnce(t, s, r.ID)
	other, err := s.CommitStatuses(ctx, tenantB, r.ID, "c1")
	must(t, err)
	if len(other) != 0 {
		t.Errorf("tenant B sees %d statuses", len(other))
	}
}

func testCommitsWithPrefix(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, "")
	must(t, err)
	r2, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r2", URL: "u2"}, "")
	must(t, err)
	rb, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantB, Name: "r", URL: "u"}, "")
	must(t, err)
	sha := func(head string) string { return head + strings.Repeat("0", 40-len(head)) }
	for _, st := range []struct {
		tenant, repo, commit, context string
	}{
		{tenantA, r.ID, sha("abcd1"), "nkudo/validate"},
		{tenantA, r.ID, sha("abcd1"), "nkudo/plan"}, // one commit, two statuses
		{tenantA, r.ID, sha("abcd2"), "nkudo/validate"},
		{tenantA, r2.ID, sha("abcd3"), "nkudo/validate"},
		{tenantB, rb.ID, sha("abcd4"), "nkudo/validate"},
	} {
		must2(s.SetCommitStatus(ctx, st.tenant, store.CommitStatus{RepoID: st.repo, Commit: st.commit, Context: st.context, State: store.StateSuccess, UpdatedAt: epoch}))(t)
	}
	// A commit known only by its plan counts too.
	p := plan(tenantA, siteA, "x", "vm-a")
	p.Commit = sha("abce5")
	must2(s.StorePlan(ctx, admin, p, r.ID, epoch))(t)

	for _, tc := range []struct {
		name, tenant, repo, prefix string
		limit                      int
		want                       []string
	}{
		{"two in the repository", tenantA, r.ID, "abcd", 0, []string{sha("abcd1"), sha("abcd2")}},
		{"one", tenantA, r.ID, "abcd2", 0, []string{sha("abcd2")}},
		{"the full SHA", tenantA, r.ID, sha("abcd1"), 0, []string{sha("abcd1")}},
		{"from a plan", tenantA, r.ID, "abce", 0, []string{sha("abce5")}},
		{"every repository", tenantA, "", "abcd", 0, []string{sha("abcd1"), sha("abcd2"), sha("abcd3")}},
		{"limited", tenantA, "", "abcd", 2, []string{sha("abcd1"), sha("abcd2")}},
		{"none", tenantA, r.ID, "ffff", 0, nil},
		{"other tenant", tenantB, "", "abcd", 0, []string{sha("abcd4")}},
	} {
		got, err := s.CommitsWithPrefix(ctx, tc.tenant, tc.repo, tc.prefix, tc.limit)
		must(t, err)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: CommitsWithPrefix(%q) (-want +got):\n%s", tc.name, tc.prefix, diff)
		}
	}
	for _, bad := range []string{"", "abc", "ABCD", "ab%d", "abc_", "zzzz"} {
		_, err := s.CommitsWithPrefix(ctx, tenantA, "", bad, 0)
		wantErr(t, err, store.ErrInvalid)
	}
}

func testPreviews(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, "")
	must(t, err)
	p1 := store.Preview{Tenant: tenantA, RepoID: r.ID, PR: 7, Commit: "c1", Summary: "1 site: 1 create", PlanText: "+ create vm-a", PlanJSON: []byte(`{"sites":[]}`), CreatedAt: epoch,
		State: store.PreviewOpen, Base: "b1", Inventories: map[string]int64{"edge-1": 3, "edge-2": 5}}
	p2 := p1
	p2.Commit, p2.Summary, p2.CreatedAt = "c2", "1 site: 2 create", epoch.Add(second)
	wantErr(t, s.PutPreview(ctx, tenantB, p1), store.ErrNotFound)
	must(t, s.PutPreview(ctx, tenantA, p1))
	must(t, s.PutPreview(ctx, tenantA, p2))
	must(t, s.PutPreview(ctx, tenantA, p2)) // upsert
	got, err := s.GetPreview(ctx, tenantA, r.ID, 7)
	must(t, err)
	if diff := cmp.Diff(p2, got); diff != "" {
		t.Errorf("GetPreview (-want +got):\n%s", diff)
	}
	_, err = s.GetPreview(ctx, tenantA, r.ID, 8)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.GetPreview(ctx, tenantB, r.ID, 7)
	wantErr(t, err, store.ErrNotFound)
	list, err := s.ListPreviews(ctx, tenantA, r.ID)
	must(t, err)
	if diff := cmp.Diff([]store.Preview{p2, p1}, list); diff != "" {
		t.Errorf("ListPreviews (-want +got):\n%s", diff)
	}
}

// testPreviewState: a pull request's closed or merged state is kept on its
// previews, and a preview stored after the close (one queued before it)
// stays closed; only a reopen (PreviewOpen) opens it again.
func testPreviewState(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r := mustGet(s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, ""))(t)
	state := func(pr int) store.PreviewState {
		t.Helper()
		return mustGet(s.GetPreview(ctx, tenantA, r.ID, pr))(t).State
	}
	wantErr(t, s.SetPreviewState(ctx, tenantA, r.ID, 7, store.PreviewClosed), store.ErrNotFound)
	p := store.Preview{RepoID: r.ID, PR: 7, Commit: "c1", CreatedAt: epoch, State: store.PreviewMerged}
	must(t, s.PutPreview(ctx, tenantA, p))
	if got := state(7); got != store.PreviewOpen {
		t.Fatalf("first preview state = %q, want open (PutPreview ignores State)", got)
	}
	must(t, s.PutPreview(ctx, tenantA, store.Preview{RepoID: r.ID, PR: 8, Commit: "c1", CreatedAt: epoch}))
	wantErr(t, s.SetPreviewState(ctx, tenantA, r.ID, 7, "gone"), store.ErrInvalid)
	wantErr(t, s.SetPreviewState(ctx, tenantB, r.ID, 7, store.PreviewClosed), store.ErrNotFound)
	must(t, s.SetPreviewState(ctx, tenantA, r.ID, 7, store.PreviewMerged))
	if got := state(7); got != store.PreviewMerged {
		t.Fatalf("state after merge = %q", got)
	}
	if got := state(8); got != store.PreviewOpen {
		t.Errorf("another pull request's state = %q, want open", got)
	}
	// A preview queued before the merge lands after it: still merged, and
	// so is the upsert of an existing one.
	p.Commit, p.CreatedAt, p.State = "c2", epoch.Add(second), store.PreviewOpen
	must(t, s.PutPreview(ctx, tenantA, p))
	if got := state(7); got != store.PreviewMerged {
		t.Errorf("preview stored after the merge: state %q, want merged", got)
	}
	must(t, s.PutPreview(ctx, tenantA, p))
	for _, l := range mustGet(s.ListPreviews(ctx, tenantA, r.ID))(t) {
		if l.PR == 7 && l.State != store.PreviewMerged {
			t.Errorf("preview %s of #7 is %q, want merged", l.Commit, l.State)
		}
	}
	must(t, s.SetPreviewState(ctx, tenantA, r.ID, 7, store.PreviewOpen))
	if got := state(7); got != store.PreviewOpen {
		t.Errorf("state after reopen = %q", got)
	}

	// OpenPreviews: the newest of each open pull request, lean.
	must(t, s.PutPreview(ctx, tenantA, store.Preview{RepoID: r.ID, PR: 8, Commit: "c0", CreatedAt: epoch.Add(-second)}))
	must(t, s.PutPreview(ctx, tenantA, store.Preview{RepoID: r.ID, PR: 9, Commit: "c9", CreatedAt: epoch}))
	must(t, s.PutPreview(ctx, tenantA, store.Preview{RepoID: r.ID, PR: 9, Commit: "c8", CreatedAt: epoch, PlanText: "x",
		Inventories: map[string]int64{"edge-1": 4}, Base: "b"}))
	must(t, s.PutPreview(ctx, tenantA, store.Preview{RepoID: r.ID, PR: 10, Commit: "c10", CreatedAt: epoch}))
	must(t, s.SetPreviewState(ctx, tenantA, r.ID, 10, store.PreviewClosed))
	var got []string
	for _, p := range mustGet(s.OpenPreviews(ctx, tenantA, r.ID))(t) {
		if p.PlanText != "" || len(p.PlanJSON) != 0 || p.State != store.PreviewOpen {
			t.Errorf("open preview %+v: want no plan bodies, state open", p)
		}
		if p.PR == 9 && (p.Inventories["edge-1"] != 4 || p.Base != "b") {
			t.Errorf("open preview of #9 lost its inputs: %+v", p)
		}
		got = append(got, fmt.Sprintf("#%d@%s", p.PR, p.Commit))
	}
	// #9's two heads tie on time: the lowest commit, as GetPreview picks.
	if want := []string{"#7@c2", "#8@c1", "#9@c8"}; !slices.Equal(got, want) {
		t.Errorf("OpenPreviews = %v, want %v", got, want)
	}
	if g := mustGet(s.GetPreview(ctx, tenantA, r.ID, 9))(t); g.Commit != "c8" {
		t.Errorf("GetPreview of #9 = %s, want c8 as OpenPreviews", g.Commit)
	}
	if l := mustGet(s.OpenPreviews(ctx, tenantB, r.ID))(t); len(l) != 0 {
		t.Errorf("tenant B sees open previews %+v", l)
	}
}

func testDeliveries(t *testing.T, s store.Store) {
	ctx := t.Context()
	dup, err := s.RecordDelivery(ctx, "github", "d1", epoch)
	must(t, err)
	if dup {
		t.Error("first delivery reported duplicate")
	}
	dup, err = s.RecordDelivery(ctx, "github", "d1", epoch.Add(second))
	must(t, err)
	if !dup {
		t.Error("second delivery not reported duplicate")
	}
	dup, err = s.RecordDelivery(ctx, "gitlab", "d1", epoch)
	must(t, err)
	if dup {
		t.Error("same ID from another forge reported duplicate")
	}
	must2(s.RecordDelivery(ctx, "github", "d2", epoch.Add(time.Hour)))(t)
	n, err := s.PruneDeliveries(ctx, epoch.Add(time.Minute))
	must(t, err)
	if n != 2 {
		t.Errorf("pruned %d, want 2", n)
	}
	dup, _ = s.RecordDelivery(ctx, "github", "d2", epoch)
	if !dup {
		t.Error("pruning removed a recent delivery")
	}
}

// testPayloads: a body hash is a duplicate within the window whatever the
// delivery ID, per repository; past the window it is accepted and renewed;
// PruneDeliveries forgets it.
func testPayloads(t *testing.T, s store.Store) {
	ctx := t.Context()
	const window = time.Hour
	record := func(repo, hash string, at time.Time) bool {
		t.Helper()
		dup, err := s.RecordPayload(ctx, repo, hash, at, window)
		must(t, err)
		return dup
	}
	for _, step := range []struct {
		name, repo, hash string
		at               time.Time
		want             bool
	}{
		{"first", "r1", "h1", epoch, false},
		{"replayed", "r1", "h1", epoch.Add(second), true},
		{"replayed at the end of the window", "r1", "h1", epoch.Add(window), true},
		{"same body, other repository", "r2", "h1", epoch.Add(second), false},
		{"other body", "r1", "h2", epoch.Add(second), false},
		{"after the window", "r1", "h1", epoch.Add(window + second), false},
		{"replayed within the renewed window", "r1", "h1", epoch.Add(window + 2*second), true},
	} {
		if got := record(step.repo, step.hash, step.at); got != step.want {
			t.Errorf("%s: duplicate = %v, want %v", step.name, got, step.want)
		}
	}
	if _, err := s.RecordPayload(ctx, "", "h", epoch, window); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("empty repository: %v, want ErrInvalid", err)
	}
	if _, err := s.RecordPayload(ctx, "r1", "h", epoch, 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("zero window: %v, want ErrInvalid", err)
	}
	// Prune before the renewed r1/h1: r2/h1 and r1/h2 go.
	n, err := s.PruneDeliveries(ctx, epoch.Add(window))
	must(t, err)
	if n != 2 {
		t.Errorf("pruned %d, want 2", n)
	}
	if record("r2", "h1", epoch.Add(2*second)) {
		t.Error("a pruned payload is still a duplicate")
	}
	if !record("r1", "h1", epoch.Add(window+3*second)) {
		t.Error("pruning removed a recent payload")
	}
}

func testAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s) // 2 tenants + 4 sites = 6 events
	p := plan(tenantA, siteA, "1", "vm-a")
	must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	must2(s.RecordActionResult(ctx, agent, tenantA, siteA, store.ActionResult{PlanID: p.ID, ActionID: p.Actions[0].ID, Status: model.ActionSucceeded, FinishedAt: epoch}))(t)
	must2(s.RecordActionResult(ctx, agent, tenantA, siteA, store.ActionResult{PlanID: p.ID, ActionID: p.Actions[0].ID, Status: model.ActionSucceeded, FinishedAt: epoch}))(t)
	// Failed mutations write nothing.
	_, err := s.CreateTenant(ctx, admin, store.Tenant{ID: tenantA})
	wantErr(t, err, store.ErrConflict)
	// Telemetry writes nothing.
	must2(s.RecordHeartbeat(ctx, tenantA, siteA, store.Heartbeat{Time: epoch}))(t)
	e, err := s.AppendAudit(ctx, store.AuditEvent{Tenant: tenantB, Actor: "system:reconciler", Action: "reconcile.trigger", Object: "repository/x", Detail: []byte(`{ "ref": "main" }`)})
	must(t, err)
	if e.Seq != 9 || e.Hash == "" || e.PrevHash == "" || string(e.Detail) != `{"ref":"main"}` {
		t.Errorf("AppendAudit = %+v, want seq 9 with hashes and compact detail", e)
	}
	_, err = s.AppendAudit(ctx, store.AuditEvent{Actor: "x"})
	wantErr(t, err, store.ErrInvalid)

	all, err := s.ListAudit(ctx, "", 0, 0)
	must(t, err)
	var actions []string
	for i, ev := range all {
		actions = append(actions, ev.Action)
		if ev.Seq != int64(i+1) {
			t.Errorf("event %d has seq %d", i, ev.Seq)
		}
		if i > 0 && ev.PrevHash != all[i-1].Hash {
			t.Errorf("event %d does not link to its predecessor", ev.Seq)
		}
		if store.AuditHash(ev) != ev.Hash {
			t.Errorf("event %d hash does not match its content", ev.Seq)
		}
	}
	wantActions := []string{"tenant.create", "site.create", "site.create", "tenant.create", "site.create", "site.create", "plan.store", "action.result", "reconcile.trigger"}
	if diff := cmp.Diff(wantActions, actions); diff != "" {
		t.Errorf("audit actions (-want +got):\n%s", diff)
	}
	a, err := s.ListAudit(ctx, tenantA, 0, 0)
	must(t, err)
	if len(a) != 5 {
		t.Errorf("tenant A has %d events, want 5", len(a))
	}
	for _, ev := range a {
		if ev.Tenant != tenantA {
			t.Errorf("tenant A's audit shows %+v", ev)
		}
	}
	page, err := s.ListAudit(ctx, "", 7, 1)
	must(t, err)
	if len(page) != 1 || page[0].Seq != 8 || page[0].Actor != agent.String() {
		t.Errorf("ListAudit(after 7, limit 1) = %+v", page)
	}
	v, err := s.VerifyAudit(ctx)
	must(t, err)
	if !v.OK() || v.Events != 9 {
		t.Errorf("VerifyAudit = %+v, want 9 events intact", v)
	}
}

func testAuditTamper(t *testing.T, open Open) {
	cases := []struct {
		name        string
		sql         string
		firstBroken int64
	}{
		{"edited actor", `UPDATE audit_events SET actor = 'admin:someone-else' WHERE seq = 3`, 3},
		{"edited detail", `UPDATE audit_events SET detail = '{"name":"x"}' WHERE seq = 1`, 1},
		{"edited hash", `UPDATE audit_events SET hash = 'abc' WHERE seq = 2`, 2},
		{"deleted middle", `DELETE FROM audit_events WHERE seq = 4`, 4},
		{"deleted tail", `DELETE FROM audit_events WHERE seq = 6`, 6},
		{"inserted", `INSERT INTO audit_events (seq, at, tenant, actor, action, object, detail, prev_hash, hash)
			SELECT 7, at, tenant, actor, action, object, detail, hash, hash FROM audit_events WHERE seq = 6`, 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			raw, ok := s.(Raw)
			if !ok {
				t.Skipf("SKIP: %T has no ExecRaw hook; audit tamper detection untested on this backend", s)
			}
			ctx := t.Context()
			seed(t, s)
			v, err := s.VerifyAudit(ctx)
			must(t, err)
			if !v.OK() {
				t.Fatalf("chain broken before tampering: %+v", v)
			}
			must(t, raw.ExecRaw(ctx, tc.sql))
			v, err = s.VerifyAudit(ctx)
			must(t, err)
			if v.FirstBroken != tc.firstBroken || v.Reason == "" {
				t.Errorf("VerifyAudit after %s = %+v, want first broken %d with a reason", tc.name, v, tc.firstBroken)
			}
		})
	}
}

func testLeaseExclusive(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.AcquireLease(ctx, "", "h", time.Minute)
	wantErr(t, err, store.ErrInvalid)
	for round := range 5 {
		name := fmt.Sprintf("repo/%d", round)
		var wg sync.WaitGroup
		won := make(chan string, 2)
		start := make(chan struct{})
		for _, holder := range []string{"replica-a", "replica-b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ok, err := s.AcquireLease(ctx, name, holder, time.Minute)
				if err != nil {
					t.Errorf("AcquireLease: %v", err)
				}
				if ok {
					won <- holder
				}
			}()
		}
		close(start)
		wg.Wait()
		close(won)
		var winners []string
		for h := range won {
			winners = append(winners, h)
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: winners %v, want exactly one", round, winners)
		}
		winner, loser := winners[0], "replica-a"
		if winner == loser {
			loser = "replica-b"
		}
		ok, err := s.AcquireLease(ctx, name, winner, time.Minute)
		must(t, err)
		if !ok {
			t.Error("holder could not re-acquire its own lease")
		}
		ok, err = s.RenewLease(ctx, name, winner, time.Minute)
		must(t, err)
		if !ok {
			t.Error("holder could not renew")
		}
		ok, err = s.RenewLease(ctx, name, loser, time.Minute)
		must(t, err)
		if ok {
			t.Error("non-holder renewed")
		}
		must(t, s.ReleaseLease(ctx, name, loser)) // not the holder: no effect
		ok, err = s.AcquireLease(ctx, name, loser, time.Minute)
		must(t, err)
		if ok {
			t.Error("release by a non-holder freed the lease")
		}
		must(t, s.ReleaseLease(ctx, name, winner))
		ok, err = s.AcquireLease(ctx, name, loser, time.Minute)
		must(t, err)
		if !ok {
			t.Error("lease not free after release")
		}
	}
}

func testLeaseHandover(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok, err := s.AcquireLease(ctx, "repo/x", "replica-a", 200*time.Millisecond)
	must(t, err)
	if !ok {
		t.Fatal("first acquire failed")
	}
	// Poll until replica-b takes over once the lease has expired.
	waitFor(t, "replica-b to take over the expired lease", func() bool {
		ok, err := s.AcquireLease(ctx, "repo/x", "replica-b", time.Minute)
		must(t, err)
		return ok
	})
	ok, err = s.RenewLease(ctx, "repo/x", "replica-a", time.Minute)
	must(t, err)
	if ok {
		t.Error("the old holder renewed a lease that was handed over")
	}
	ok, err = s.AcquireLease(ctx, "repo/x", "replica-a", time.Minute)
	must(t, err)
	if ok {
		t.Error("the old holder took the lease back from a live holder")
	}
}

func testWakeUp(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	ch, cancel := s.Subscribe(ctx, store.PlanTopic(tenantA, siteA))
	otherCh, otherCancel := s.Subscribe(ctx, store.PlanTopic(tenantA, siteB))
	defer otherCancel()
	p := plan(tenantA, siteA, "1", "vm-a")
	must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	if !woken(ch) {
		t.Fatal("plan subscriber not woken by StorePlan")
	}
	if !quiet(otherCh) {
		t.Error("another site's subscriber was woken")
	}
	// A finished plan wakes the fleet, not the plan topic: no long-poll's
	// answer changes, and under a rollout each woke for a read. (Drop a
	// repeat of StorePlan's wake-up first: on PostgreSQL the listener
	// delivers it again.)
	fleet, cancelFleet := s.Subscribe(ctx, store.FleetTopic(tenantA))
	defer cancelFleet()
	select {
	case <-ch:
	default:
	}
	must2(s.RecordActionResult(ctx, agent, tenantA, siteA, store.ActionResult{PlanID: p.ID, ActionID: p.Actions[0].ID, Status: model.ActionSucceeded, FinishedAt: epoch}))(t)
	if !woken(fleet) {
		t.Error("fleet subscriber not woken when the plan finished")
	}
	if !quiet(ch) {
		t.Error("plan subscriber woken when the plan finished")
	}
	// Custom topics.
	c2, cancel2 := s.Subscribe(ctx, "custom/topic")
	must(t, s.Notify(ctx, "custom/topic"))
	if !woken(c2) {
		t.Error("Notify did not wake its subscriber")
	}
	cancel2()
	cancel()
	// Wake-ups may be spurious or duplicated (a subscriber re-reads state),
	// so drop what was buffered before cancel; after cancel nothing arrives.
	select {
	case <-ch:
	default:
	}
	must2(s.StorePlan(ctx, admin, plan(tenantA, siteA, "2", "vm-b"), "", epoch))(t)
	if !quiet(ch) {
		t.Error("woken after cancel")
	}
	// NotifyTopics wakes every topic it names with one call, and no other.
	var many []<-chan struct{}
	for i := range 3 {
		c, cancel := s.Subscribe(ctx, fmt.Sprintf("many/%d", i))
		defer cancel()
		many = append(many, c)
	}
	unnamed, cancelUnnamed := s.Subscribe(ctx, "many/unnamed")
	defer cancelUnnamed()
	must(t, s.NotifyTopics(ctx, nil))
	must(t, s.NotifyTopics(ctx, []string{"many/0", "many/1", "many/2", "many/1"}))
	for i, c := range many {
		if !woken(c) {
			t.Errorf("NotifyTopics did not wake topic many/%d", i)
		}
	}
	if !quiet(unnamed) {
		t.Error("NotifyTopics woke a topic it did not name")
	}
	// Wake-ups coalesce: many notifications, the subscriber drains at least one.
	c3, cancel3 := s.Subscribe(ctx, "burst")
	defer cancel3()
	for range 10 {
		must(t, s.Notify(ctx, "burst"))
	}
	if !woken(c3) {
		t.Error("burst subscriber not woken")
	}
}

func testTenantScoping(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, "sec")
	must(t, err)
	p := plan(tenantA, siteA, "1", "vm-a")
	must2(s.StorePlan(ctx, admin, p, r.ID, epoch))(t)
	must2(s.CreateEnrollmentToken(ctx, admin, store.EnrollmentToken{ID: "e1", Tenant: tenantA, Site: siteA, ExpiresAt: epoch.Add(time.Hour)}, store.HashSecret("s")))(t)
	tok, err := s.CreateAPIToken(ctx, admin, store.APIToken{Tenant: tenantA, Name: "t"}, store.HashSecret("tok"))
	must(t, err)
	// Tenant B reads and writes tenant A's objects by ID: every one is ErrNotFound.
	calls := map[string]func() error{
		"GetRepository":         func() error { _, err := s.GetRepository(ctx, tenantB, r.ID); return err },
		"WebhookSecret":         func() error { _, err := s.WebhookSecret(ctx, tenantB, r.ID); return err },
		"DeleteRepository":      func() error { return s.DeleteRepository(ctx, admin, tenantB, r.ID) },
		"SiteDesired":           func() error { _, err := s.SiteDesired(ctx, tenantB, r.ID); return err },
		"GetPlan":               func() error { _, err := s.GetPlan(ctx, tenantB, p.ID); return err },
		"Logs":                  func() error { _, err := s.Logs(ctx, tenantB, p.ID, 0, 0); return err },
		"GetPreview":            func() error { _, err := s.GetPreview(ctx, tenantB, r.ID, 1); return err },
		"DeleteAPIToken":        func() error { return s.DeleteAPIToken(ctx, admin, tenantB, tok.ID) },
		"DeleteEnrollmentToken": func() error { return s.DeleteEnrollmentToken(ctx, admin, tenantB, "e1") },
		"StartAction":           func() error { return s.StartAction(ctx, tenantB, siteA, p.ID, p.Actions[0].ID, epoch) },
		"SetCommitStatus": func() error {
			_, err := s.SetCommitStatus(ctx, tenantB, store.CommitStatus{RepoID: r.ID, Commit: "c", Context: "x", State: store.StatePending})
			return err
		},
		"GetSite(other tenant)": func() error { _, err := s.GetSite(ctx, tenantB, "only-in-a"); return err },
		"MarkCommitSeen":        func() error { return s.MarkCommitSeen(ctx, tenantB, r.ID, "c", epoch) },
		"SetRepositoryError":    func() error { return s.SetRepositoryError(ctx, tenantB, r.ID, "x", epoch) },
		"RecordActionResult": func() error {
			_, err := s.RecordActionResult(ctx, agent, tenantB, siteA, store.ActionResult{PlanID: p.ID, ActionID: p.Actions[0].ID, Status: model.ActionSucceeded})
			return err
		},
		"PutPreview": func() error { return s.PutPreview(ctx, tenantB, store.Preview{RepoID: r.ID, PR: 1, Commit: "c"}) },
		"AppendLogs": func() error {
			_, err := s.AppendLogs(ctx, tenantB, siteA, []store.LogLine{{PlanID: p.ID, Seq: 1}})
			return err
		},
		"UpdateRepository": func() error {
			_, err := s.UpdateRepository(ctx, admin, tenantB, r.ID, store.RepositoryUpdate{})
			return err
		},
		"Inventory(other)":       func() error { _, err := s.Inventory(ctx, tenantB, "only-in-a"); return err },
		"SetSiteCertificate":     func() error { return s.SetSiteCertificate(ctx, admin, tenantB, "only-in-a", "x", epoch) },
		"RecordHeartbeat(other)": func() error { _, err := s.RecordHeartbeat(ctx, tenantB, "only-in-a", store.Heartbeat{}); return err },
	}
	must2(s.CreateSite(ctx, admin, tenantA, "only-in-a"))(t)
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s across tenants: error %v, want ErrNotFound", name, err)
		}
	}
	// Lists show only the tenant's own objects.
	if l := mustGet(s.ListRepositories(ctx, tenantB))(t); len(l) != 0 {
		t.Errorf("tenant B lists repositories %+v", l)
	}
	if l := mustGet(s.ListAPITokens(ctx, tenantB))(t); len(l) != 0 {
		t.Errorf("tenant B lists api tokens %+v", l)
	}
	if l := mustGet(s.ListPreviews(ctx, tenantB, r.ID))(t); len(l) != 0 {
		t.Errorf("tenant B lists previews %+v", l)
	}
	if l := mustGet(s.ListSites(ctx, tenantB))(t); len(l) != 2 {
		t.Errorf("tenant B lists %d sites, want its own 2", len(l))
	}
	// Nothing of tenant A was changed by the attempts.
	if sec, err := s.WebhookSecret(ctx, tenantA, r.ID); err != nil || sec.Reveal() != "sec" {
		t.Errorf("tenant A's repository after the attempts: %v %v", sec, err)
	}
	if got, err := s.GetPlan(ctx, tenantA, p.ID); err != nil || got.Status != model.PlanPending {
		t.Errorf("tenant A's plan after the attempts: %v %v", got.Status, err)
	}
}

func testTenantPurge(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, "")
	must(t, err)
	p := plan(tenantA, siteA, "1", "vm-a")
	must2(s.StorePlan(ctx, admin, p, r.ID, epoch))(t)
	must2(s.AppendLogs(ctx, tenantA, siteA, []store.LogLine{{PlanID: p.ID, Seq: 1, Line: "x"}}))(t)
	must2(s.SetCommitStatus(ctx, tenantA, store.CommitStatus{RepoID: r.ID, Commit: "c", Context: "x", State: store.StatePending}))(t)
	must2(s.CreateAPIToken(ctx, admin, store.APIToken{Tenant: tenantA}, store.HashSecret("a")))(t)
	must2(s.CreateEnrollmentToken(ctx, admin, store.EnrollmentToken{ID: "e", Tenant: tenantA, Site: siteA, ExpiresAt: epoch}, store.HashSecret("s")))(t)
	must(t, s.DeleteTenant(ctx, admin, tenantA))

	_, err = s.GetPlan(ctx, tenantA, p.ID)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.APITokenByHash(ctx, store.HashSecret("a"), epoch)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.RedeemEnrollmentToken(ctx, "e", store.HashSecret("s"), epoch.Add(-time.Hour))
	wantErr(t, err, store.ErrNotFound)
	if l := mustGet(s.ListAllRepositories(ctx))(t); len(l) != 0 {
		t.Errorf("repositories survive the purge: %+v", l)
	}
	if l := mustGet(s.UnpostedCommitStatuses(ctx, 0))(t); len(l) != 0 {
		t.Errorf("statuses survive the purge: %+v", l)
	}
	if l := mustGet(s.ListSites(ctx, tenantB))(t); len(l) != 2 {
		t.Errorf("tenant B lost sites: %+v", l)
	}
	// The audit log keeps everything and stays intact.
	v, err := s.VerifyAudit(ctx)
	must(t, err)
	ev := mustGet(s.ListAudit(ctx, tenantA, 0, 0))(t)
	if !v.OK() || len(ev) == 0 || ev[len(ev)-1].Action != "tenant.delete" {
		t.Errorf("audit after purge: %+v, last tenant A events %d", v, len(ev))
	}
}

func testClose(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, s.Ping(ctx))
	must(t, s.Close())
	must(t, s.Close()) // twice is fine
	wantErr(t, s.Ping(ctx), store.ErrClosed)
	_, err := s.GetTenant(ctx, "x")
	wantErr(t, err, store.ErrClosed)
	_, err = s.CreateTenant(ctx, admin, store.Tenant{ID: "x"})
	wantErr(t, err, store.ErrClosed)
}

// testCommitStatusOnce: a context set with SetCommitStatusOnce moves
// freely while pending and never again once final, whoever writes.
func testCommitStatusOnce(t *testing.T, s store.Store, repo string) {
	ctx := t.Context()
	set := func(state store.StatusState, desc string) bool {
		t.Helper()
		changed, err := s.SetCommitStatusOnce(ctx, tenantA, store.CommitStatus{RepoID: repo, Commit: "c9", Context: "nkudo/apply",
			State: state, Description: desc, UpdatedAt: epoch})
		must(t, err)
		return changed
	}
	_, err := s.SetCommitStatusOnce(ctx, tenantB, store.CommitStatus{RepoID: repo, Commit: "c9", Context: "nkudo/apply", State: store.StatePending})
	wantErr(t, err, store.ErrNotFound)
	_, err = s.SetCommitStatusOnce(ctx, tenantA, store.CommitStatus{RepoID: repo, Commit: "c9", Context: "nkudo/apply", State: "weird"})
	wantErr(t, err, store.ErrInvalid)
	steps := []struct {
		state store.StatusState
		desc  string
		want  bool
	}{
		{store.StatePending, "0 of 2 sites converged", true},
		{store.StatePending, "0 of 2 sites converged", false}, // identical
		{store.StatePending, "1 of 2 sites converged", true},
		{store.StateSuccess, "2 sites converged", true},
		{store.StateSuccess, "2 sites converged", false},
		{store.StateFailure, "store-1: create vm failed", false}, // another replica, too late
		{store.StatePending, "0 of 2 sites converged", false},    // a re-tracking cannot reopen it
		{store.StateSuccess, "2 sites converged in 3s", false},
	}
	for i, st := range steps {
		if got := set(st.state, st.desc); got != st.want {
			t.Errorf("step %d (%s %q): changed %v, want %v", i+1, st.state, st.desc, got, st.want)
		}
	}
	got, err := s.CommitStatuses(ctx, tenantA, repo, "c9")
	must(t, err)
	if len(got) != 1 || got[0].State != store.StateSuccess || got[0].Description != "2 sites converged" {
		t.Errorf("final status %+v, want the first final one (success, 2 sites converged)", got)
	}
	// SetCommitStatus keeps its own rules: it may still overwrite.
	if changed, err := s.SetCommitStatus(ctx, tenantA, store.CommitStatus{RepoID: repo, Commit: "c9", Context: "nkudo/apply",
		State: store.StateError, Description: "x", UpdatedAt: epoch}); err != nil || !changed {
		t.Errorf("SetCommitStatus over a final state: changed %v, %v", changed, err)
	}
}
