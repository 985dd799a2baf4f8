package controlplane_test

import (
	"bytes"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/store"
)

// repoWithHistory gives acme a repository with two commits' statuses (the
// first applied, the second invalid), its last error, and a pull-request
// preview; it returns the repository and the preview's expected text.
func repoWithHistory(t *testing.T, env *cptest.Env) (store.Repository, string) {
	t.Helper()
	ctx := t.Context()
	st, actor := env.Store(), store.Actor{Kind: store.ActorSystem, ID: "test"}
	repo, err := st.CreateRepository(ctx, actor, store.Repository{Tenant: "acme", Name: "fleet", URL: "https://git.example.net/fleet.git", Branch: "main"}, "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, cs := range []store.CommitStatus{
		{Commit: "c1c1c1c1c1c1c1c1", Context: "nkudo/validate", State: store.StateSuccess, Description: "valid: 1 sites, 1 VMs", UpdatedAt: now.Add(-time.Minute)},
		{Commit: "c1c1c1c1c1c1c1c1", Context: "nkudo/plan", State: store.StateSuccess, Description: "1 site: 1 create", UpdatedAt: now.Add(-time.Minute)},
		{Commit: "c2c2c2c2c2c2c2c2", Context: "nkudo/validate", State: store.StateFailure, Description: "vms/pos.yaml:7: /spec/cpus must be >= 1", UpdatedAt: now},
	} {
		cs.RepoID = repo.ID
		if _, err := st.SetCommitStatus(ctx, "acme", cs); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.MarkCommitApplied(ctx, actor, "acme", repo.ID, "c1c1c1c1c1c1c1c1", now); err != nil {
		t.Fatal(err)
	}
	if err := st.SetRepositoryError(ctx, "acme", repo.ID, "commit c2c2c2c2c2c2: vms/pos.yaml:7: /spec/cpus: must be >= 1", now); err != nil {
		t.Fatal(err)
	}
	res := diff.Result{Sites: []diff.SiteResult{{Site: "store-1", Plan: cptest.CreatePlan("acme", "store-1", 0, "kiosk-<1>")}}}
	var js, text bytes.Buffer
	if err := diff.RenderJSON(&js, res); err != nil {
		t.Fatal(err)
	}
	if err := diff.RenderText(&text, res, diff.RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutPreview(ctx, "acme", store.Preview{RepoID: repo.ID, PR: 7, Commit: "c3c3c3c3c3c3c3c3", Summary: diff.Summary(res),
		PlanText: "text stored by an older renderer", PlanJSON: js.Bytes()}); err != nil {
		t.Fatal(err)
	}
	return repo, text.String()
}

// TestDashboardRepoPage: the repository page lists commits with their
// statuses, marks the one in force, shows the last error with its
// file:line, and renders previews with nkudoctl diff's renderer.
func TestDashboardRepoPage(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	repo, preview := repoWithHistory(t, env)
	b := env.SignInDashboard(acme.Token, "")

	status, list := b.Get(ui.PathRepos)
	if status != http.StatusOK || !strings.Contains(list, `href="/ui/repos/`+repo.ID+`"`) || !strings.Contains(list, "c1c1c1c1c1c1") {
		t.Fatalf("repositories page: %d\n%s", status, list)
	}
	status, page := b.Get(api.Path(ui.PathRepo, repo.ID))
	if status != http.StatusOK {
		t.Fatalf("repository page: %d\n%s", status, page)
	}
	for _, want := range []string{
		`data-commit="c2c2c2c2c2c2c2c2"`, `data-commit="c1c1c1c1c1c1c1c1"`, "in force",
		"1 site: 1 create", "vms/pos.yaml:7: /spec/cpus must be &gt;= 1", // statuses
		`id="last-error"`, "vms/pos.yaml:7: /spec/cpus: must be &gt;= 1", // the last error, file:line
		"PR #7",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("repository page lacks %q", want)
		}
	}
	if !strings.Contains(html.UnescapeString(page), `<pre class="log">`+preview+"</pre>") {
		t.Errorf("repository page lacks the preview as nkudoctl diff prints it:\n%s", preview)
	}
	if strings.Contains(page, "older renderer") {
		t.Errorf("repository page shows the stored text instead of rendering the preview's plan")
	}
	if i, j := strings.Index(page, "c2c2c2c2c2c2c2c2"), strings.Index(page, "c1c1c1c1c1c1c1c1"); i > j {
		t.Errorf("commits not newest first")
	}
	// No reconciler on this server: no button.
	if strings.Contains(page, `id="reconcile"`) {
		t.Errorf("a server without a reconciler shows the reconcile button")
	}
}

// TestDashboardRepoAccess: another tenant's repository page and reconcile
// form answer 404; the reconcile form needs the session's CSRF token; a
// good request goes through the API's trigger and is audited.
func TestDashboardRepoAccess(t *testing.T) {
	rec := &recorder{}
	env := cptest.Start(t, cptest.Options{Reconciler: rec})
	acme, bravo := env.NewTenant("acme"), env.NewTenant("bravo")
	repo, _ := repoWithHistory(t, env)
	a := env.SignInDashboard(acme.Token, "")
	bb := env.SignInDashboard(bravo.Token, "")
	page, reconcile := api.Path(ui.PathRepo, repo.ID), api.Path(ui.PathRepoReconcile, repo.ID)

	if status, body := bb.Get(page); status != http.StatusNotFound || strings.Contains(body, "fleet.git") {
		t.Errorf("bravo opening acme's repository: %d\n%s", status, body)
	}
	if status, body := bb.Get(ui.PathRepos); status != http.StatusOK || strings.Contains(body, repo.ID) {
		t.Errorf("bravo's repository list: %d, shows acme's repository: %v", status, strings.Contains(body, repo.ID))
	}
	post := func(b *cptest.Browser, csrf string) (int, http.Header) {
		t.Helper()
		resp, err := b.Do("POST", reconcile, url.Values{"csrf": {csrf}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	if status, _ := post(bb, bb.CSRF); status != http.StatusNotFound {
		t.Errorf("bravo reconciling acme's repository: %d, want 404", status)
	}
	if status, _ := post(a, "forged"); status != http.StatusForbidden {
		t.Errorf("reconcile with a wrong csrf token: %d, want 403", status)
	}
	if tr, _ := rec.calls(); len(tr) != 0 {
		t.Fatalf("refused requests triggered reconciles: %v", tr)
	}
	if status, body := a.Get(page); status != http.StatusOK || !strings.Contains(body, `id="reconcile"`) {
		t.Fatalf("acme's repository page has no reconcile button: %d", status)
	}
	status, header := post(a, a.CSRF)
	if status != http.StatusSeeOther || header.Get("Location") != page+"?reconcile=queued" {
		t.Fatalf("reconcile: %d to %q, want 303 to the repository page", status, header.Get("Location"))
	}
	if tr, _ := rec.calls(); len(tr) != 1 || tr[0] != "acme/"+repo.ID+"@" {
		t.Errorf("triggers %v, want one for acme/%s", tr, repo.ID)
	}
	evs, err := env.Store().ListAudit(t.Context(), "acme", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs {
		found = found || e.Action == "repo.reconcile" && e.Object == "repo/"+repo.ID
	}
	if !found {
		t.Errorf("no repo.reconcile audit event for the dashboard's trigger")
	}
}

// TestDashboardAuditPage: only admin sessions open the audit page; it
// pages through the tenant's events and shows the chain's verification.
func TestDashboardAuditPage(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	env.NewTenant("bravo")
	for i := range 130 {
		if _, err := env.Store().AppendAudit(t.Context(), store.AuditEvent{Tenant: "acme", Actor: "system/test", Action: "test.event", Object: fmt.Sprintf("thing/%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	user := env.SignInDashboard(acme.Token, "")
	if status, body := user.Get(ui.PathAudit); status != http.StatusForbidden || strings.Contains(body, "test.event") {
		t.Errorf("a tenant token's session opening the audit page: %d, want 403", status)
	}
	if _, body := user.Get(ui.PathFleet); strings.Contains(body, `href="/ui/audit"`) {
		t.Errorf("a tenant session's navigation links the audit page")
	}

	admin := env.SignInDashboard(env.AdminToken, "acme")
	status, body := admin.Get(ui.PathAudit)
	if status != http.StatusOK {
		t.Fatalf("admin audit page: %d\n%s", status, body)
	}
	for _, want := range []string{`id="chain"`, "intact", "thing/0", "test.event", "system/test", `id="next-page"`} {
		if !strings.Contains(body, want) {
			t.Errorf("audit page lacks %q", want)
		}
	}
	if strings.Contains(body, "thing/129") || strings.Contains(body, "tenant.create") && strings.Contains(body, "bravo") {
		t.Errorf("first page shows the last event or another tenant's events")
	}
	next := regexpFind(t, body, `href="(/ui/audit\?after=\d+)" id="next-page"`)
	status, body = admin.Get(html.UnescapeString(next))
	if status != http.StatusOK || !strings.Contains(body, "thing/129") || strings.Contains(body, ">thing/0<") {
		t.Errorf("second page %s: %d, want the remaining events", next, status)
	}
	if status, _ := admin.Get(ui.PathAudit + "?after=x"); status != http.StatusBadRequest {
		t.Errorf("after=x: %d, want 400", status)
	}
}

// regexpFind returns the first group of pattern in s, failing the test
// when it does not match.
func regexpFind(t *testing.T, s, pattern string) string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no match for %s", pattern)
	}
	return m[1]
}
