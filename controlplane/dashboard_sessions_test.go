package controlplane_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/store"
)

// onReplica sends a request with browser b's session cookie to another
// replica (env) and returns status and body.
func onReplica(t *testing.T, env *cptest.Env, b *cptest.Browser, method, path string, form url.Values) (int, string) {
	t.Helper()
	var rd io.Reader
	if form != nil {
		rd = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(t.Context(), method, env.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.AddCookie(b.Cookie)
	resp, err := env.NoRedirectClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestDashboardSessionSharedAcrossReplicas: with two replicas on one
// Postgres database, a session opened on one serves pages and streams on
// the other with the same CSRF token, and signing out on one ends the
// session and its open stream on the other.
func TestDashboardSessionSharedAcrossReplicas(t *testing.T) {
	a := cptest.Start(t, cptest.Options{Postgres: true})
	b := cptest.Start(t, cptest.Options{ReplicaOf: a})
	acme := a.NewTenant("acme")
	a.NewSite("acme", "store-1")
	plan := cptest.CreatePlan("acme", "store-1", 0, "pos-1")
	if _, err := a.Store().StorePlan(t.Context(), store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	br := a.SignInDashboard(acme.Token, "")

	status, page := onReplica(t, b, br, "GET", ui.PathFleet, nil)
	if status != http.StatusOK || !strings.Contains(page, `name="csrf" value="`+br.CSRF+`"`) {
		t.Fatalf("replica b with a session of replica a: %d (want 200 and the same form token)\n%s", status, page)
	}
	next := openStream(t, b, br, api.Path(ui.PathEvents, plan.ID), nil)
	if ev := next(); ev.name != "plan" {
		t.Fatalf("stream on replica b: first event %+v", ev)
	}
	resp, err := br.Do("POST", ui.PathSignOut, url.Values{"csrf": {br.CSRF}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out on replica a: %d", resp.StatusCode)
	}
	if ev := next(); ev.name != "end" {
		t.Errorf("replica b's stream after sign-out on replica a: %+v, want end", ev)
	}
	if status, _ := onReplica(t, b, br, "GET", ui.PathFleet, nil); status != http.StatusUnauthorized {
		t.Errorf("replica b after sign-out on replica a: %d, want 401", status)
	}
}

// TestDashboardSessionSurvivesRestart: sessions are in the store, so a
// restarted server keeps its browsers signed in; the store holds the
// session under the hash of its cookie value, not the value.
func TestDashboardSessionSurvivesRestart(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	b := env.SignInDashboard(acme.Token, "")
	env.Restart()
	if status, page := b.Get(ui.PathFleet); status != http.StatusOK || !strings.Contains(page, b.CSRF) {
		t.Fatalf("after a restart: %d, want the session still signed in with its form token", status)
	}
	l := store.UISessionLimits{}
	if _, err := env.Store().GetUISession(t.Context(), ui.SessionKey(b.Cookie.Value).Hash(), l, time.Now(), false); err != nil {
		t.Errorf("the store has no session under the cookie's hash: %v", err)
	}
	if _, err := env.Store().GetUISession(t.Context(), b.Cookie.Value, l, time.Now(), false); err == nil {
		t.Errorf("the store holds the session under its cookie value")
	}
}
