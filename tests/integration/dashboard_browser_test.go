package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// browser starts a headless Chromium of its own (own profile, so own
// cookies) and returns its context. Without Chromium the test skips, or
// fails when NKUDO_E2E_BROWSER=require.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("NKUDO_E2E_BROWSER") == "require" {
			t.Fatal("NKUDO_E2E_BROWSER=require but no chromium on PATH (apt-get install chromium)")
		}
		t.Skip("SKIPPED: no chromium on PATH; install it (apt-get install chromium) or set NKUDO_E2E_BROWSER=require to fail instead")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		// Chromium refuses to run as root with its sandbox, and the test
		// machines run tests as root: the sandbox is off for this
		// throw-away browser that only visits the test's own server.
		chromedp.NoSandbox,
		// The server's certificate comes from the test's ephemeral CA,
		// which this fresh profile does not trust.
		chromedp.IgnoreCertErrors,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancel := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	// Bounds each browser's whole life; the steps wait on page state.
	ctx, cancel3 := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel3)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// artifacts is where screenshots go: $NKUDO_ARTIFACTS/<test> or a temp dir.
func artifacts(t *testing.T) string {
	dir := t.TempDir()
	if d := os.Getenv("NKUDO_ARTIFACTS"); d != "" {
		dir = filepath.Join(d, t.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

func screenshot(dir, name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		buf, err := chromedp.FullScreenshot(100)(ctx, t) // quality 100 makes a PNG
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644)
	})
}

func signIn(url, token string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Navigate(url+"/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("fleet")),
	)
}

// text reads the text of the element sel matches.
func text(sel chromedp.CSS, into *string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		v, err := chromedp.Text(sel)(ctx, t)
		*into = v
		return err
	})
}

// eval runs a script and stores its (awaited) value.
func eval[T any](script string, into *T) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		v, err := chromedp.Evaluate[T](script, chromedp.EvalAwaitPromise)(ctx, t)
		*into = v
		return err
	})
}

// TestDashboardInBrowser drives the dashboard in headless Chromium: sign
// in, the fleet lists the tenant's sites, a plan page shows its actions go
// to succeeded without a reload while the agent reports them, the site
// page shows host and VMs, a site whose agent stopped shows offline,
// another tenant's session cannot open the plan's page, the site's page
// or the plan's stream, and sign-out ends the session.
func TestDashboardInBrowser(t *testing.T) {
	clock := &cptest.Clock{}
	env := cptest.Start(t, cptest.Options{Clock: clock})
	ctx := t.Context()
	alpha, bravo := env.NewTenant("alpha"), env.NewTenant("bravo")
	a1 := env.Enroll("alpha", "edge-1")
	a2 := env.Enroll("alpha", "edge-2")
	env.Enroll("bravo", "bravo-site")
	if _, err := a1.Client.Heartbeat(ctx, api.HeartbeatRequest{
		Facts: api.HostFacts{Hostname: "edge-1-host", CPUs: 4, MemoryMiB: 8192, KVM: true, AgentVersion: "v9.9.9"},
		VMs:   []model.ObservedVM{{Name: "pos-0", State: model.VMRunning, Managed: true, CPUs: 1, MemoryMiB: 256}},
	}); err != nil {
		t.Fatal(err)
	}
	plan := cptest.CreatePlan("alpha", "edge-1", 1, "pos-1", "pos-2")
	if _, err := env.Store().StorePlan(ctx, store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	dir := artifacts(t)

	b := browser(t)
	var fleet string
	if err := chromedp.Do(b,
		signIn(env.URL, alpha.Token),
		text("#fleet", &fleet),
		screenshot(dir, "1-fleet"),
	); err != nil {
		t.Fatalf("sign in and open the fleet: %v", err)
	}
	for _, want := range []string{"edge-1", "edge-2", "online", "v9.9.9"} {
		if !strings.Contains(fleet, want) {
			t.Errorf("fleet page lacks %q:\n%s", want, fleet)
		}
	}
	if strings.Contains(fleet, "bravo") {
		t.Errorf("alpha's fleet page shows bravo's site:\n%s", fleet)
	}

	// The plan page: the agent reports each action; the page must follow
	// without a reload. A reload would drop the marker set on the window.
	planURL := env.URL + "/ui/plans/" + plan.ID
	var set string
	if err := chromedp.Do(b,
		chromedp.Navigate(planURL),
		chromedp.WaitVisible(chromedp.CSS(`#plan-status.st-pending`)),
		eval(`window.nkudoMarker = "same page"`, &set),
		screenshot(dir, "2-plan-pending"),
	); err != nil {
		t.Fatalf("open the plan page: %v", err)
	}
	// Wait until the page's stream delivered its first event, so the
	// results below are seen as changes.
	if err := chromedp.Do(b, chromedp.WaitVisible(chromedp.Search(`//span[@id="live-note" and text()="live"]`))); err != nil {
		t.Fatalf("event stream never connected: %v", err)
	}
	// The agent's log lines appear in the page's log as they arrive.
	if _, err := a1.Client.SendLogs(ctx, []api.LogLine{
		{PlanID: plan.ID, ActionID: plan.Actions[0].ID, Seq: 1, Time: time.Now(), Stream: api.StreamAgent, Line: "creating <pos-1>"},
		{PlanID: plan.ID, ActionID: plan.Actions[0].ID, Seq: 2, Time: time.Now(), Stream: api.StreamStderr, Line: "disk image verified"},
	}); err != nil {
		t.Fatal(err)
	}
	{
		wctx, cancel := context.WithTimeout(b, 20*time.Second)
		err := chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS(`#log span[data-seq="2"].ln-stderr`)))
		cancel()
		if err != nil {
			t.Fatalf("the log never showed the agent's lines: %v", err)
		}
	}
	for _, a := range plan.Actions {
		now := time.Now()
		if _, err := a1.Client.ReportResults(ctx, api.ActionResult{PlanID: plan.ID, ActionID: a.ID, Status: model.ActionRunning, StartedAt: now}); err != nil {
			t.Fatal(err)
		}
		// Bounded below the stream's keep-alive, so that only the store's
		// wake-up, not some periodic re-read, can make the page change.
		wctx, cancel := context.WithTimeout(b, 20*time.Second)
		sel := fmt.Sprintf(`tr[data-action="%s"] .st-running`, a.ID)
		err := chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS(sel)))
		cancel()
		if err != nil {
			t.Fatalf("action %s never showed running: %v", a.ID, err)
		}
		if _, err := a1.Client.ReportResults(ctx, api.ActionResult{PlanID: plan.ID, ActionID: a.ID, Status: model.ActionSucceeded, StartedAt: now, FinishedAt: now.Add(1500 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	var marker, durations, logText string
	if err := chromedp.Do(b,
		chromedp.WaitVisible(chromedp.CSS(`#plan-status.st-succeeded`)),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-action="%s"] .st-succeeded`, plan.Actions[1].ID))),
		eval(`window.nkudoMarker || ""`, &marker),
		text(`#actions tbody`, &durations),
		text(`#log`, &logText),
		screenshot(dir, "3-plan-succeeded"),
	); err != nil {
		t.Fatalf("plan page never showed the plan succeeded: %v", err)
	}
	if marker != "same page" {
		t.Errorf("the plan page reloaded (marker %q); live updates must not reload", marker)
	}
	if !strings.Contains(durations, "1s") {
		t.Errorf("actions show no duration:\n%s", durations)
	}
	if !strings.Contains(logText, "creating <pos-1>") || !strings.Contains(logText, "disk image verified") {
		t.Errorf("the plan's log shows %q, want both lines the agent sent (as text)", logText)
	}

	// The site page shows the host and its VMs, desired and reported.
	var site string
	if err := chromedp.Do(b,
		chromedp.Navigate(env.URL+"/ui/sites/edge-1"),
		text("main", &site),
		screenshot(dir, "4-site"),
	); err != nil {
		t.Fatalf("site page: %v", err)
	}
	for _, want := range []string{"edge-1-host", "pos-0", "managed", plan.ID[:12], "\t2\t" /* its two actions */} {
		if !strings.Contains(site, want) {
			t.Errorf("site page lacks %q:\n%s", want, site)
		}
	}

	// The fleet page follows the fleet: edge-2's first heartbeat turns its
	// row online without a reload.
	var e2State, fleetMarker string
	if err := chromedp.Do(b,
		chromedp.Navigate(env.URL+"/ui/fleet"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-site="edge-2"] [data-state="never"]`)),
		eval(`window.nkudoMarker = "same fleet page"`, &set),
		chromedp.WaitVisible(chromedp.Search(`//span[@id="live-note" and text()="live"]`)),
	); err != nil {
		t.Fatalf("fleet page before edge-2's heartbeat: %v", err)
	}
	if _, err := a2.Client.Heartbeat(ctx, api.HeartbeatRequest{Facts: api.HostFacts{AgentVersion: "v9.9.8"}}); err != nil {
		t.Fatal(err)
	}
	{
		wctx, cancel := context.WithTimeout(b, 20*time.Second)
		err := chromedp.Do(wctx,
			chromedp.WaitVisible(chromedp.CSS(`tr[data-site="edge-2"] [data-state="online"]`)),
			text(`tr[data-site="edge-2"] [data-role="agent"]`, &e2State),
			eval(`window.nkudoMarker || ""`, &fleetMarker),
			screenshot(dir, "4b-fleet-live"),
		)
		cancel()
		if err != nil {
			t.Fatalf("edge-2 never showed online on the open fleet page: %v", err)
		}
	}
	if fleetMarker != "same fleet page" || e2State != "v9.9.8" {
		t.Errorf("live fleet row: marker %q (want no reload), agent %q (want v9.9.8)", fleetMarker, e2State)
	}

	// The agent stops: a minute without heartbeats and the fleet shows
	// edge-1 offline.
	clock.Advance(time.Minute)
	var state string
	if err := chromedp.Do(b, chromedp.Navigate(env.URL+"/ui/fleet")); err != nil {
		t.Fatalf("fleet after the agent stopped: %v", err)
	}
	// The live stream re-renders the rows as the page opens; wait for the
	// state rather than read a row that may be replaced under the reader.
	{
		// The wait is the assertion: a read after it can meet the row
		// half re-rendered by the next event.
		wctx, cancel := context.WithTimeout(b, 20*time.Second)
		err := chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-site="edge-1"] [data-state="offline"]`)))
		cancel()
		if err != nil {
			_ = chromedp.Do(b, text(`tr[data-site="edge-1"] [data-state]`, &state))
			t.Errorf("edge-1 without heartbeats for a minute never showed offline (it shows %q): %v", state, err)
		}
		if err := chromedp.Do(b, screenshot(dir, "5-fleet-offline")); err != nil {
			t.Fatalf("fleet after the agent stopped: %v", err)
		}
	}

	// Bravo's session, in its own browser, cannot open alpha's plan page,
	// site page or the plan's event stream.
	bb := browser(t)
	var planText, siteText string
	var streamStatus int
	if err := chromedp.Do(bb,
		signIn(env.URL, bravo.Token),
		chromedp.Navigate(planURL),
		text("main", &planText),
		screenshot(dir, "6-bravo-denied"),
		chromedp.Navigate(env.URL+"/ui/sites/edge-1"),
		text("main", &siteText),
		eval(`fetch("/ui/plans/`+plan.ID+`/events").then(r => r.status)`, &streamStatus),
	); err != nil {
		t.Fatalf("bravo's browser: %v", err)
	}
	for name, text := range map[string]string{"plan": planText, "site": siteText} {
		if !strings.Contains(text, "404") || strings.Contains(text, "pos-1") || strings.Contains(text, "edge-1-host") {
			t.Errorf("bravo opened alpha's %s page:\n%s", name, text)
		}
	}
	if streamStatus != 404 {
		t.Errorf("bravo's request for alpha's plan stream: status %d, want 404", streamStatus)
	}

	// Sign-out ends alpha's session: the fleet page now asks to sign in.
	var after string
	if err := chromedp.Do(b,
		chromedp.Navigate(env.URL+"/ui/fleet"),
		chromedp.WaitVisible(chromedp.ID("signout")),
		chromedp.Click(chromedp.ID("signout")),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.Navigate(env.URL+"/ui/fleet"),
		text("main", &after),
		screenshot(dir, "7-signed-out"),
	); err != nil {
		t.Fatalf("sign out: %v", err)
	}
	if !strings.Contains(after, "401") || strings.Contains(after, "edge-1") {
		t.Errorf("after sign-out the fleet page still opens:\n%s", after)
	}
}

// TestDashboardRepositoryAndAuditInBrowser opens, in headless Chromium, a
// repository's page (commits with their statuses, the last error with
// file:line, a pull request's preview as nkudoctl diff prints it), then
// the audit page of an admin session (the chain verified, the tenant's
// events), and checks a tenant session is refused the audit page.
func TestDashboardRepositoryAndAuditInBrowser(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	ctx := t.Context()
	alpha := env.NewTenant("alpha")
	st, actor := env.Store(), store.Actor{Kind: store.ActorSystem, ID: "test"}
	repo, err := st.CreateRepository(ctx, actor, store.Repository{Tenant: "alpha", Name: "fleet", URL: "https://git.example.net/fleet.git", Branch: "main"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, cs := range []store.CommitStatus{
		{Commit: "a1a1a1a1a1a1a1a1", Context: "nkudo/validate", State: store.StateSuccess, Description: "valid: 1 sites, 1 VMs"},
		{Commit: "a1a1a1a1a1a1a1a1", Context: "nkudo/plan", State: store.StateSuccess, Description: "1 site: 1 create"},
		{Commit: "a1a1a1a1a1a1a1a1", Context: "nkudo/apply", State: store.StateSuccess, Description: "1 site converged"},
	} {
		cs.RepoID = repo.ID
		if _, err := st.SetCommitStatus(ctx, "alpha", cs); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.MarkCommitApplied(ctx, actor, "alpha", repo.ID, "a1a1a1a1a1a1a1a1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := st.SetRepositoryError(ctx, "alpha", repo.ID, "commit b2b2b2b2b2b2: sites/edge.yaml:4: /spec/netbird: unknown field", time.Now()); err != nil {
		t.Fatal(err)
	}
	res := diff.Result{Sites: []diff.SiteResult{{Site: "edge-1", Plan: cptest.CreatePlan("alpha", "edge-1", 0, "kiosk-1")}}}
	var js, want bytes.Buffer
	if err := diff.RenderJSON(&js, res); err != nil {
		t.Fatal(err)
	}
	if err := diff.RenderText(&want, res, diff.RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutPreview(ctx, "alpha", store.Preview{RepoID: repo.ID, PR: 12, Commit: "c3c3c3c3c3c3c3c3", Summary: diff.Summary(res), PlanJSON: js.Bytes()}); err != nil {
		t.Fatal(err)
	}
	dir := artifacts(t)

	b := browser(t)
	var commits, lastError, preview string
	if err := chromedp.Do(b,
		signIn(env.URL, alpha.Token),
		chromedp.Click(chromedp.Search(`//nav//a[text()="Repositories"]`)),
		chromedp.WaitVisible(chromedp.ID("repos")),
		screenshot(dir, "1-repositories"),
		chromedp.Click(chromedp.Search(`//table[@id="repos"]//a[text()="fleet"]`)),
		chromedp.WaitVisible(chromedp.ID("commits")),
		text(`#commits tbody`, &commits),
		text(`#last-error`, &lastError),
		text(`article[data-pr="12"] pre`, &preview),
		screenshot(dir, "2-repository"),
	); err != nil {
		t.Fatalf("repository page: %v", err)
	}
	for _, w := range []string{"a1a1a1a1a1a1", "in force", "success", "1 site: 1 create", "1 site converged"} {
		if !strings.Contains(commits, w) {
			t.Errorf("commits lack %q:\n%s", w, commits)
		}
	}
	if !strings.Contains(lastError, "sites/edge.yaml:4") {
		t.Errorf("last error %q lacks its file:line", lastError)
	}
	if strings.TrimSpace(preview) != strings.TrimSpace(want.String()) {
		t.Errorf("preview shows\n%s\nwant what nkudoctl diff prints:\n%s", preview, want.String())
	}
	var navHasAudit bool
	var denied string
	if err := chromedp.Do(b,
		eval(`!!document.querySelector('nav a[href="/ui/audit"]')`, &navHasAudit),
		chromedp.Navigate(env.URL+"/ui/audit"),
		text("main", &denied),
		screenshot(dir, "3-audit-denied"),
	); err != nil {
		t.Fatalf("audit page as a tenant: %v", err)
	}
	if navHasAudit || !strings.Contains(denied, "403") {
		t.Errorf("tenant session: audit link %v, audit page %q; want no link and 403", navHasAudit, denied)
	}

	ab := browser(t)
	var chain, events string
	if err := chromedp.Do(ab,
		chromedp.Navigate(env.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), env.AdminToken),
		chromedp.SendKeys(chromedp.ID("tenant"), "alpha"),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("fleet")),
		chromedp.Click(chromedp.Search(`//nav//a[text()="Audit"]`)),
		chromedp.WaitVisible(chromedp.ID("audit")),
		text("#chain", &chain),
		text("#audit tbody", &events),
		screenshot(dir, "4-audit"),
	); err != nil {
		t.Fatalf("audit page as admin: %v", err)
	}
	if !strings.Contains(chain, "intact") {
		t.Errorf("chain verification shows %q, want intact", chain)
	}
	for _, w := range []string{"repository.create", "ui.signin", "repository/" + repo.ID} {
		if !strings.Contains(events, w) {
			t.Errorf("audit events lack %q:\n%s", w, events)
		}
	}
}
