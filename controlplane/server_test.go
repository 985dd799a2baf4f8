package controlplane_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/time/rate"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// recorder is a Reconciler that remembers its calls.
type recorder struct {
	mu        sync.Mutex
	triggers  []string
	inventory []string
}

func (r *recorder) Trigger(_ context.Context, tenant, repo, ref string) (api.TriggerResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.triggers = append(r.triggers, tenant+"/"+repo+"@"+ref)
	return api.TriggerResult{RepoID: repo, Ref: ref, Queued: true}, nil
}

func (r *recorder) InventoryChanged(_ context.Context, tenant, site string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inventory = append(r.inventory, tenant+"/"+site)
}

func (r *recorder) calls() ([]string, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.triggers), slices.Clone(r.inventory)
}

func TestHooks(t *testing.T) {
	spec := model.VMSpec{State: model.VMRunning, CPUs: 2, MemoryMiB: 512}
	rec := &recorder{}
	env := cptest.Start(t, cptest.Options{Reconciler: rec})
	ctx := t.Context()
	acme := env.NewTenant("acme")
	agent := env.Enroll("acme", "s1")
	// The desired side comes from the store, as the reconciler records it.
	st, actor := env.Store(), store.Actor{Kind: store.ActorSystem, ID: "test"}
	src, err := st.CreateRepository(ctx, actor, store.Repository{Tenant: "acme", Name: "desired-src", URL: "https://git.example.net/src.git"}, "")
	if err != nil {
		t.Fatal(err)
	}
	desired := []model.VirtualMachine{{Name: "web", Site: "s1", Spec: spec}, {Name: "db", Site: "s1", Spec: spec}}
	if _, err := st.RecordSitePlan(ctx, actor, "acme", src.ID, store.SiteDesired{Site: "s1", Hash: "h", Commit: "c0ffee", VMs: desired}, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkCommitApplied(ctx, actor, "acme", src.ID, "c0ffee", time.Now()); err != nil {
		t.Fatal(err)
	}

	web := model.ObservedVM{Name: "web", State: model.VMRunning, Managed: true, SpecHash: spec.Hash(), CPUs: 2, MemoryMiB: 512}
	stray := model.ObservedVM{Name: "stray", State: model.VMRunning}
	for range 2 { // the second identical report is no change
		if _, err := agent.Client.Heartbeat(ctx, api.HeartbeatRequest{VMs: []model.ObservedVM{web, stray}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, inv := rec.calls(); !cmp.Equal(inv, []string{"acme/s1"}) {
		t.Errorf("InventoryChanged calls = %v, want one for acme/s1", inv)
	}

	vms, err := acme.Client.SiteVMs(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	want := api.SiteVMs{Site: "s1", Reported: true, InventoryVersion: 1, DesiredKnown: true, DesiredCommit: "c0ffee", VMs: []api.VMView{
		{Name: "db", Desired: &spec},
		{Name: "stray", Actual: &stray},
		{Name: "web", Desired: &spec, Actual: &web, InSync: true},
	}}
	if diff := cmp.Diff(want, vms); diff != "" {
		t.Errorf("desired vs actual (-want +got):\n%s", diff)
	}

	repo, err := acme.Client.CreateRepo(ctx, api.CreateRepoRequest{URL: "https://git.example.net/fleet.git", WebhookSecret: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if repo.Name != "fleet" || !repo.HasWebhookSecret || !strings.HasSuffix(repo.WebhookURL, "/v1/webhooks/"+repo.ID) {
		t.Errorf("repo = %+v", repo)
	}
	for _, path := range []string{api.PathRepos, api.Path(api.PathRepo, repo.ID)} {
		req, _ := http.NewRequestWithContext(ctx, "GET", env.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+acme.Token)
		resp, err := env.HTTPClient(nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Contains(string(body), "s3cret") {
			t.Errorf("GET %s: status %d, body returns the webhook secret or fails: %s", path, resp.StatusCode, body)
		}
	}
	res, err := acme.Client.Reconcile(ctx, repo.ID, "refs/heads/main")
	if err != nil || !res.Queued {
		t.Fatalf("reconcile = %+v, %v", res, err)
	}
	if tr, _ := rec.calls(); !cmp.Equal(tr, []string{"acme/" + repo.ID + "@refs/heads/main"}) {
		t.Errorf("Trigger calls = %v", tr)
	}
	evs, err := acme.Client.ListAudit(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs, func(e api.AuditEvent) bool { return e.Action == "repo.reconcile" && e.Object == "repo/"+repo.ID }) {
		t.Error("reconcile trigger not audited")
	}
}

func TestHooksAbsent(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	repo, err := acme.Client.CreateRepo(t.Context(), api.CreateRepoRequest{Name: "r", URL: "https://git.example.net/r.git", WebhookSecret: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acme.Client.Reconcile(t.Context(), repo.ID, ""); !errors.Is(err, api.ErrNotImplemented) {
		t.Errorf("reconcile without a reconciler: %v, want not implemented", err)
	}
	hc := env.HTTPClient(nil)
	resp, err := hc.Post(env.URL+api.Path(api.PathWebhook, repo.ID), "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("webhook without a handler: %d, want 501", resp.StatusCode)
	}
}

// TestHeartbeatIntervalFollowsFleetSize checks Nomad's rule:
// max(minimum, sites / rate).
func TestHeartbeatIntervalFollowsFleetSize(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) {
		o.HeartbeatRate, o.MinHeartbeatInterval, o.EnrollRate = 0.5, 5*time.Second, rate.Inf
	}})
	env.NewTenant("acme")
	for i := range 11 {
		env.NewSite("acme", fmt.Sprintf("s%d", i))
	}
	agent := env.Enroll("acme", "s11") // the twelfth site
	hb, err := agent.Client.Heartbeat(t.Context(), api.HeartbeatRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := 24 * time.Second; hb.NextHeartbeat.D() != want { // 12 sites / 0.5 per second
		t.Errorf("next heartbeat %s, want %s", hb.NextHeartbeat, want)
	}
	site, err := env.UserClient(env.AdminToken, "acme").GetSite(t.Context(), "s11")
	if err != nil || site.HeartbeatInterval.D() != 24*time.Second || !site.Online {
		t.Errorf("site = %+v, %v; want the given interval recorded and online", site, err)
	}
}

// TestShutdownReleasesLongPolls: a parked long-poll answers "nothing new"
// as soon as the server shuts down, instead of holding shutdown for its wait.
func TestShutdownReleasesLongPolls(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	env.NewTenant("acme")
	agent := env.Enroll("acme", "s1")
	type result struct {
		p   *api.AgentPlan
		err error
	}
	got := make(chan result, 1)
	go func() {
		p, err := agent.Client.WaitPlan(t.Context(), "", 60*time.Second)
		got <- result{p, err}
	}()
	waitUntil(t, "the long-poll to park", func() bool { return env.Server().LongPolls() == 1 })
	restarted := make(chan struct{})
	go func() { env.Restart(); close(restarted) }()
	select {
	case r := <-got:
		if r.err != nil || r.p != nil {
			t.Errorf("long-poll during shutdown = %v, %v; want no plan and no error", r.p, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("long-poll still parked 20s after shutdown began")
	}
	<-restarted
	// The agent reconnects to the restarted server on the same URL.
	if _, err := agent.Client.Heartbeat(t.Context(), api.HeartbeatRequest{}); err != nil {
		t.Errorf("heartbeat after restart: %v", err)
	}
}

// TestFollowLogs streams lines as they arrive and ends when the plan is done.
func TestFollowLogs(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	ctx := t.Context()
	acme := env.NewTenant("acme")
	agent := env.Enroll("acme", "s1")
	spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256}
	plan := model.Plan{ID: "p1", Tenant: "acme", Site: "s1", Actions: []model.Action{{ID: "a1", Operation: model.OpCreate, VM: "vm", Reason: model.ReasonMissing, Spec: &spec, SpecHash: spec.Hash()}}}
	if _, err := env.Store().StorePlan(ctx, store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	send := func(seq int64) {
		t.Helper()
		if _, err := agent.Client.SendLogs(ctx, []api.LogLine{{PlanID: "p1", ActionID: "a1", Seq: seq, Time: time.Now(), Stream: api.StreamStdout, Line: fmt.Sprint("line ", seq)}}); err != nil {
			t.Fatal(err)
		}
	}
	send(1)
	lines := make(chan api.LogLine, 10)
	done := make(chan error, 1)
	go func() {
		done <- acme.Client.FollowLogs(ctx, "p1", 0, func(l api.LogLine) error { lines <- l; return nil })
	}()
	next := func() api.LogLine {
		t.Helper()
		select {
		case l := <-lines:
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no line streamed")
		}
		return api.LogLine{}
	}
	if l := next(); l.Seq != 1 {
		t.Errorf("first streamed seq %d", l.Seq)
	}
	send(2)
	if l := next(); l.Seq != 2 || l.Line != "line 2" {
		t.Errorf("second streamed line %+v", l)
	}
	if _, err := agent.Client.ReportResults(ctx, api.ActionResult{PlanID: "p1", ActionID: "a1", Status: model.ActionSucceeded}); err != nil {
		t.Fatal(err)
	}
	// Once the plan is finished the stream ends; a new line wakes it to notice.
	send(3)
	if l := next(); l.Seq != 3 {
		t.Errorf("third streamed seq %d", l.Seq)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("follow ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end after the plan finished")
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDocsCoverEveryRoute keeps docs/api.md in step with the route table.
func TestDocsCoverEveryRoute(t *testing.T) {
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	env := cptest.Start(t, cptest.Options{})
	for _, rt := range env.Server().Routes() {
		if !strings.Contains(string(doc), rt.Method+" "+rt.Pattern) {
			t.Errorf("docs/api.md does not document %s %s", rt.Method, rt.Pattern)
		}
	}
}

func TestPerSiteMetricsSwitch(t *testing.T) {
	for _, perSite := range []bool{true, false} {
		t.Run(fmt.Sprint("per-site=", perSite), func(t *testing.T) {
			env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) { o.DisablePerSiteMetrics = !perSite }})
			env.NewTenant("acme")
			agent := env.Enroll("acme", "s1")
			for range 2 { // the lag is observed from the second heartbeat on
				if _, err := agent.Client.Heartbeat(t.Context(), api.HeartbeatRequest{}); err != nil {
					t.Fatal(err)
				}
			}
			mfs, err := env.Server().Registry().Gather()
			if err != nil {
				t.Fatal(err)
			}
			names := map[string]int{}
			for _, mf := range mfs {
				names[mf.GetName()] = len(mf.GetMetric())
			}
			if got := names["nkudo_heartbeat_lag_seconds"]; (got == 1) != perSite {
				t.Errorf("per-site lag series = %d with per-site %v", got, perSite)
			}
			if names["nkudo_heartbeat_lag_distribution_seconds"] != 1 {
				t.Error("lag histogram missing")
			}
		})
	}
}

// TestReplicaWakesLongPoll: with two replicas on one Postgres database, a
// plan stored through one wakes the agent's long-poll parked on the other
// (LISTEN/NOTIFY through the store).
func TestReplicaWakesLongPoll(t *testing.T) {
	a := cptest.Start(t, cptest.Options{Postgres: true})
	b := cptest.Start(t, cptest.Options{ReplicaOf: a})
	a.NewTenant("acme")
	agent := a.Enroll("acme", "s1")
	onB := b.AgentClient(agent.Cert)
	got := make(chan *api.AgentPlan, 1)
	go func() {
		p, err := onB.WaitPlan(t.Context(), "", 30*time.Second)
		if err != nil {
			t.Errorf("long-poll on replica b: %v", err)
		}
		got <- p
	}()
	waitUntil(t, "the long-poll to park on replica b", func() bool { return b.Server().LongPolls() == 1 })
	spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256}
	plan := model.Plan{ID: "p1", Tenant: "acme", Site: "s1", Actions: []model.Action{{ID: "a1", Operation: model.OpCreate, VM: "vm", Reason: model.ReasonMissing, Spec: &spec, SpecHash: spec.Hash()}}}
	if _, err := a.Store().StorePlan(t.Context(), store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p == nil || p.Plan.ID != "p1" {
			t.Errorf("replica b's long-poll returned %v, want plan p1", p)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("replica b's long-poll was not woken by a plan stored through replica a")
	}
}

// TestCRLFormats checks that ?format=pem serves the same list as the DER
// default, as one PEM block of type X509 CRL.
func TestCRLFormats(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	env.NewTenant("acme")
	env.Enroll("acme", "s1")
	if _, err := env.UserClient(env.AdminToken, "acme").RevokeSite(t.Context(), "s1"); err != nil {
		t.Fatal(err)
	}
	status, der := env.Raw(nil, "", http.MethodGet, api.PathCRL, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d", api.PathCRL, status)
	}
	status, pemText := env.Raw(nil, "", http.MethodGet, api.PathCRL+"?format=pem", nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s?format=pem: status %d", api.PathCRL, status)
	}
	block, rest := pem.Decode([]byte(pemText))
	if block == nil || block.Type != "X509 CRL" || len(rest) != 0 {
		t.Fatalf("PEM CRL is not one X509 CRL block: %q", pemText)
	}
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatalf("parse PEM CRL: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 1 {
		t.Errorf("CRL lists %d certificates, want 1", len(crl.RevokedCertificateEntries))
	}
	// Both answers are signed afresh, so compare what they list.
	derCRL, err := x509.ParseRevocationList([]byte(der))
	if err != nil {
		t.Fatalf("parse DER CRL: %v", err)
	}
	listed := func(l *x509.RevocationList) []string {
		var out []string
		for _, e := range l.RevokedCertificateEntries {
			out = append(out, e.SerialNumber.Text(16)+" "+e.RevocationTime.String())
		}
		return out
	}
	if d := cmp.Diff(listed(derCRL), listed(crl)); d != "" {
		t.Errorf("PEM and DER CRLs differ (-der +pem):\n%s", d)
	}
}

// TestMetricLabelsBounded: requests with methods and paths of the caller's
// choosing add no series to the request histogram; unknown methods count
// as "other" and unknown paths as "unmatched".
func TestMetricLabelsBounded(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	series := func() map[string]bool {
		t.Helper()
		mfs, err := env.Server().Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, mf := range mfs {
			if mf.GetName() != "nkudo_http_request_duration_seconds" {
				continue
			}
			for _, m := range mf.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				out[strings.Join(labels, ",")] = true
			}
		}
		return out
	}
	// One of each shape first: an unknown method on a known path (405) and
	// on an unknown path (404), and a known method on an unknown path.
	env.Raw(nil, "", "BREW", api.PathHealthz, nil)
	env.Raw(nil, "", "BREW", "/nowhere", nil)
	env.Raw(nil, "", "GET", "/nowhere", nil)
	before := series()
	for _, want := range []string{"code=405,method=other,route=unmatched", "code=404,method=other,route=unmatched", "code=404,method=GET,route=unmatched"} {
		if !before[want] {
			t.Errorf("no series %s among %v", want, before)
		}
	}
	for i := range 40 {
		env.Raw(nil, "", fmt.Sprintf("M%d", i), fmt.Sprintf("/v1/x%d/y", i), nil)
		env.Raw(nil, "", fmt.Sprintf("PROPFIND%d", i), api.PathHealthz, nil)
		env.Raw(nil, "", "GET", fmt.Sprintf("/v1/webhooks-%d/%d", i, i), nil)
	}
	if diff := cmp.Diff(before, series()); diff != "" {
		t.Errorf("arbitrary methods and paths changed the series (-before +after):\n%s", diff)
	}
}

// TestDocsBoundEveryUnauthenticatedRoute: docs/api.md's table of
// unauthenticated routes has a row for every public, enrollment and
// webhook route of the route table, so a new one cannot go unbounded
// without saying so.
func TestDocsBoundEveryUnauthenticatedRoute(t *testing.T) {
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "## Unauthenticated routes and their bounds")
	if !ok {
		t.Fatal("docs/api.md has no section on unauthenticated routes")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	env := cptest.Start(t, cptest.Options{})
	n := 0
	for _, rt := range env.Server().Routes() {
		switch rt.Auth {
		case controlplane.AuthPublic, controlplane.AuthEnroll, controlplane.AuthWebhook:
		default:
			continue
		}
		n++
		if !strings.Contains(section, "| `"+rt.Method+" "+rt.Pattern+"` |") {
			t.Errorf("the unauthenticated routes table has no row for %s %s", rt.Method, rt.Pattern)
		}
	}
	if n == 0 {
		t.Error("the route table has no unauthenticated routes")
	}
}
