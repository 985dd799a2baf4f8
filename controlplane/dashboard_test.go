package controlplane_test

import (
	"bufio"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

func TestDashboardSignInNeedsTheFormToken(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	hc := env.NoRedirectClient()
	post := func(cookie *http.Cookie, form url.Values) (int, string, []*http.Cookie) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "POST", env.URL+ui.PathSignIn, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
			t.Fatalf("read the answer: %v", err)
		}
		return resp.StatusCode, b.String(), resp.Cookies()
	}
	cases := []struct {
		name   string
		cookie *http.Cookie
		form   url.Values
		want   int
		field  string
	}{
		{"no form token", nil, url.Values{"token": {acme.Token}}, http.StatusForbidden, "csrf"},
		{"form token without its cookie", nil, url.Values{"token": {acme.Token}, "csrf": {"x"}}, http.StatusForbidden, "csrf"},
		{"form token not matching the cookie", &http.Cookie{Name: ui.SignInCookie, Value: "y"}, url.Values{"token": {acme.Token}, "csrf": {"x"}}, http.StatusForbidden, "csrf"},
		{"wrong token", &http.Cookie{Name: ui.SignInCookie, Value: "x"}, url.Values{"token": {"nkudo_nope"}, "csrf": {"x"}}, http.StatusUnauthorized, "token"},
		{"empty token", &http.Cookie{Name: ui.SignInCookie, Value: "x"}, url.Values{"csrf": {"x"}}, http.StatusBadRequest, "token"},
		{"admin token without a tenant", &http.Cookie{Name: ui.SignInCookie, Value: "x"}, url.Values{"token": {env.AdminToken}, "csrf": {"x"}}, http.StatusBadRequest, "tenant"},
		{"tenant token naming another tenant", &http.Cookie{Name: ui.SignInCookie, Value: "x"}, url.Values{"token": {acme.Token}, "tenant": {"other"}, "csrf": {"x"}}, http.StatusForbidden, "tenant"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body, cookies := post(tc.cookie, tc.form)
			if status != tc.want || !strings.Contains(body, "field "+tc.field) {
				t.Errorf("status %d, want %d with a message naming field %s; body: %s", status, tc.want, tc.field, body)
			}
			for _, c := range cookies {
				if c.Name == ui.SessionCookie && c.Value != "" {
					t.Errorf("a refused sign-in set a session cookie")
				}
			}
		})
	}
	// An admin token naming a tenant gets that tenant's view.
	b := env.SignInDashboard(env.AdminToken, "acme")
	if status, body := b.Get(ui.PathFleet); status != http.StatusOK || !strings.Contains(body, "tenant <strong>acme</strong>") {
		t.Errorf("admin session for acme: %d\n%s", status, body)
	}
}

func TestDashboardPagesCarrySecurityHeaders(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	env.NewSite("acme", "store-1")
	b := env.SignInDashboard(acme.Token, "")
	for _, path := range []string{"/", ui.PathFleet, "/ui/sites/store-1", "/ui/sites/absent"} {
		resp, err := b.Do("GET", path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
			t.Errorf("%s: headers %v", path, h)
		}
	}
}

// dashboardWithPlan starts a control plane with tenant acme, its site
// store-1 holding one stored plan, and a browser signed in as acme.
func dashboardWithPlan(t *testing.T) (*cptest.Env, cptest.Tenant, model.Plan, *cptest.Browser) {
	t.Helper()
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	env.NewSite("acme", "store-1")
	plan := cptest.CreatePlan("acme", "store-1", 0, "pos-1")
	if _, err := env.Store().StorePlan(t.Context(), store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	return env, acme, plan, env.SignInDashboard(acme.Token, "")
}

func TestDashboardSessionEndsWithItsToken(t *testing.T) {
	env, acme, plan, b := dashboardWithPlan(t)
	stream, err := b.Do("GET", api.Path(ui.PathEvents, plan.ID), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	events := bufio.NewReader(stream.Body)
	if line, err := events.ReadString('\n'); err != nil || line != "event: plan\n" {
		t.Fatalf("first line of the stream %q, %v", line, err)
	}
	toks, err := acme.Client.ListTokens(t.Context())
	if err != nil || len(toks) != 1 {
		t.Fatalf("tokens %v, %v", toks, err)
	}
	if err := acme.Client.DeleteToken(t.Context(), toks[0].ID); err != nil {
		t.Fatal(err)
	}
	// The open stream ends at its next wake-up.
	if err := env.Store().Notify(t.Context(), store.PlanTopic("acme", "store-1")); err != nil {
		t.Fatal(err)
	}
	var rest strings.Builder
	if _, err := events.WriteTo(&rest); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rest.String(), "event: end") {
		t.Errorf("the stream after the token was deleted: %q, want it to end", rest.String())
	}
	if status, body := b.Get(ui.PathFleet); status != http.StatusUnauthorized || !strings.Contains(body, `href="/"`) {
		t.Errorf("after the token was deleted: %d, want 401 with a sign-in link\n%s", status, body)
	}
}

func TestDashboardSessionIdleTimeout(t *testing.T) {
	clock := &cptest.Clock{}
	env := cptest.Start(t, cptest.Options{Clock: clock})
	acme := env.NewTenant("acme")
	b := env.SignInDashboard(acme.Token, "")
	for range 3 { // used every 14 minutes: stays open past 15
		clock.Advance(14 * time.Minute)
		if status, _ := b.Get(ui.PathFleet); status != http.StatusOK {
			t.Fatalf("session used within the idle timeout: %d", status)
		}
	}
	clock.Advance(16 * time.Minute)
	if status, _ := b.Get(ui.PathFleet); status != http.StatusUnauthorized {
		t.Errorf("session idle for 16 minutes: %d, want 401", status)
	}
}

func TestDashboardSignOutEndsSessionAndStreams(t *testing.T) {
	_, _, plan, b := dashboardWithPlan(t)
	resp, err := b.Do("GET", api.Path(ui.PathEvents, plan.ID), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, ct)
	}
	rd := bufio.NewReader(resp.Body)
	next := func() string { // the next event's name and data
		t.Helper()
		var ev []string
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("stream ended: %v (read %q)", err, ev)
			}
			if line == "\n" && len(ev) > 0 {
				return strings.Join(ev, "|")
			}
			if !strings.HasPrefix(line, ":") && line != "\n" {
				ev = append(ev, strings.TrimSpace(line))
			}
		}
	}
	if ev := next(); !strings.Contains(ev, "event: plan") || !strings.Contains(ev, `"status":"pending"`) {
		t.Fatalf("first event %q", ev)
	}
	// Without the form token sign-out is refused and the session lives.
	r, err := b.Do("POST", ui.PathSignOut, url.Values{"csrf": {"forged"}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-out without the form token: %d, want 403", r.StatusCode)
	}
	r, err = b.Do("POST", ui.PathSignOut, url.Values{"csrf": {b.CSRF}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %d, want 303", r.StatusCode)
	}
	if ev := next(); !strings.Contains(ev, "event: end") {
		t.Errorf("stream after sign-out: %q, want the end event", ev)
	}
	if _, err := rd.ReadString('\n'); err == nil {
		t.Error("the stream stayed open after sign-out")
	}
	if status, _ := b.Get(ui.PathFleet); status != http.StatusUnauthorized {
		t.Errorf("fleet after sign-out: %d, want 401", status)
	}
}

func TestDashboardFleetFiltersWithoutScript(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	a := env.Enroll("acme", "up-1")
	env.NewSite("acme", "down-1")
	if _, err := a.Client.Heartbeat(t.Context(), api.HeartbeatRequest{VMs: []model.ObservedVM{{Name: "v", State: model.VMRunning, Managed: true, CPUs: 1, MemoryMiB: 64}}}); err != nil {
		t.Fatal(err)
	}
	b := env.SignInDashboard(acme.Token, "")
	_, body := b.Get(ui.PathFleet + "?state=online")
	if !strings.Contains(body, `data-site="up-1"`) || strings.Contains(body, `data-site="down-1"`) {
		t.Errorf("state=online lists the wrong sites:\n%s", body)
	}
	_, body = b.Get(ui.PathFleet + "?sort=name&order=desc")
	if i, j := strings.Index(body, `data-site="up-1"`), strings.Index(body, `data-site="down-1"`); i < 0 || j < 0 || i > j {
		t.Errorf("order=desc did not put up-1 first")
	}
	status, body := b.Get(ui.PathFleet + "?state=sideways")
	if status != http.StatusBadRequest || !strings.Contains(body, "query parameter state") {
		t.Errorf("bad state: %d\n%s", status, body)
	}
}

func TestDashboardStreamsPerSessionAreBounded(t *testing.T) {
	env, acme, plan, b := dashboardWithPlan(t)
	open := func() *http.Response {
		t.Helper()
		resp, err := b.Do("GET", api.Path(ui.PathEvents, plan.ID), nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var streams []*http.Response
	for range ui.MaxStreams {
		resp := open() //nolint:bodyclose // held open to fill the bound; closed below
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %d", len(streams)+1, resp.StatusCode)
		}
		streams = append(streams, resp) //nolint:bodyclose // closed below
	}
	over := open()
	over.Body.Close()
	if over.StatusCode != http.StatusTooManyRequests || over.Header.Get("Retry-After") == "" {
		t.Fatalf("stream over the bound: %d (Retry-After %q), want 429", over.StatusCode, over.Header.Get("Retry-After"))
	}
	// Another session has its own allowance.
	other := env.SignInDashboard(acme.Token, "")
	resp, err := other.Do("GET", api.Path(ui.PathEvents, plan.ID), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("another session's stream: %d", resp.StatusCode)
	}
	for _, r := range streams {
		r.Body.Close()
	}
}
