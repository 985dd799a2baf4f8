package integration

import (
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
	env.Enroll("alpha", "edge-2")
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
	var marker, durations string
	if err := chromedp.Do(b,
		chromedp.WaitVisible(chromedp.CSS(`#plan-status.st-succeeded`)),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-action="%s"] .st-succeeded`, plan.Actions[1].ID))),
		eval(`window.nkudoMarker || ""`, &marker),
		text(`#actions tbody`, &durations),
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

	// The agent stops: a minute without heartbeats and the fleet shows
	// edge-1 offline.
	clock.Advance(time.Minute)
	var state string
	if err := chromedp.Do(b,
		chromedp.Navigate(env.URL+"/ui/fleet"),
		text(`tr[data-site="edge-1"] [data-state]`, &state),
		screenshot(dir, "5-fleet-offline"),
	); err != nil {
		t.Fatalf("fleet after the agent stopped: %v", err)
	}
	if state != "offline" {
		t.Errorf("edge-1 without heartbeats for a minute shows %q, want offline", state)
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
