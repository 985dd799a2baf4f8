package ui

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSessionsIdleTimeoutAndSignOut(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &Sessions{Idle: time.Minute, Lifetime: time.Hour, Now: func() time.Time { return now }}
	k, sess := s.Create("hash", "acme")
	if got := s.Get(k, true); got != sess || got.Tenant != "acme" {
		t.Fatalf("Get after Create = %+v", got)
	}
	now = now.Add(50 * time.Second)
	if s.Get(k, true) == nil {
		t.Fatal("session used within the idle timeout ended")
	}
	now = now.Add(61 * time.Second)
	if s.Get(k, true) != nil {
		t.Fatal("idle session still valid")
	}
	select {
	case <-sess.Done():
	default:
		t.Fatal("an expired session's Done is open")
	}
	k2, sess2 := s.Create("hash", "acme")
	s.Delete(k2)
	if s.Get(k2, false) != nil {
		t.Fatal("deleted session still valid")
	}
	<-sess2.Done()
	if s.Get("", false) != nil || s.Get("forged", false) != nil {
		t.Fatal("unknown cookie value accepted")
	}
}

func TestSessionsLifetimeAndBound(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &Sessions{Idle: time.Hour, Lifetime: 2 * time.Hour, Max: 2, Now: func() time.Time { return now }}
	k1, _ := s.Create("a", "t")
	for range 3 {
		now = now.Add(50 * time.Minute)
		s.Get(k1, true)
	}
	if s.Get(k1, true) != nil {
		t.Fatal("session outlived its lifetime")
	}
	s.Create("b", "t")
	now = now.Add(time.Second)
	s.Create("c", "t")
	now = now.Add(time.Second)
	s.Create("d", "t")
	if n := s.Len(); n != 2 {
		t.Fatalf("%d sessions held, want the bound 2", n)
	}
}

func TestSessionCSRF(t *testing.T) {
	s := &Session{CSRF: "abc"}
	for tok, want := range map[string]bool{"abc": true, "": false, "abd": false, "ab": false} {
		if got := s.CheckCSRF(tok); got != want {
			t.Errorf("CheckCSRF(%q) = %v, want %v", tok, got, want)
		}
	}
	if k := SessionKey("secret-value"); strings.Contains(k.String(), "secret") {
		t.Error("session key prints itself")
	}
}

func TestFleetQuery(t *testing.T) {
	now := time.Now()
	rows := []SiteRow{
		{Name: "c", Online: true, LastSeen: now, Lag: time.Second, VMTotal: 3, Labels: map[string]string{"region": "eu"}},
		{Name: "a", LastSeen: now.Add(-time.Hour), Lag: time.Hour, VMTotal: 1, Labels: map[string]string{"region": "us"}},
		{Name: "b", VMTotal: 2},
	}
	names := func(rs []SiteRow) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Name)
		}
		return out
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{"a", "b", "c"}},
		{"sort=vms&order=desc", []string{"c", "b", "a"}},
		{"sort=name&order=desc", []string{"c", "b", "a"}},
		{"sort=state", []string{"a", "b", "c"}},
		{"sort=lag", []string{"b", "c", "a"}},
		{"state=online", []string{"c"}},
		{"state=never", []string{"b"}},
		{"label=region", []string{"a", "c"}},
		{"label=region%3Deu", []string{"c"}},
	} {
		r := httptest.NewRequest("GET", "/ui/fleet?"+tc.query, nil)
		q, err := ParseFleetQuery(r.URL.Query())
		if err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		if diff := cmp.Diff(tc.want, names(q.Apply(append([]SiteRow(nil), rows...)))); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.query, diff)
		}
	}
	for query, field := range map[string]string{"state=gone": "state", "sort=color": "sort", "order=up": "order"} {
		r := httptest.NewRequest("GET", "/ui/fleet?"+query, nil)
		if _, err := ParseFleetQuery(r.URL.Query()); err == nil || !strings.Contains(err.Error(), "parameter "+field) {
			t.Errorf("%s: error %v, want one naming %s", query, err, field)
		}
	}
}

func TestRenderSetsSecurityHeadersAndEscapes(t *testing.T) {
	r, err := NewRenderer()
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	p := FleetPage{Layout: Layout{Title: "Fleet", Tenant: "acme", CSRF: "tok"}, Rows: []SiteRow{{Name: `<script>alert(1)</script>`}}, Now: time.Now()}
	if err := r.Render(w, 200, "fleet.html", p); err != nil {
		t.Fatal(err)
	}
	csp := w.Header().Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP allows inline code: %q", csp)
	}
	if w.Header().Get("X-Frame-Options") != "DENY" {
		t.Error("no X-Frame-Options: DENY")
	}
	body := w.Body.String()
	if strings.Contains(body, "<script>alert") {
		t.Error("a site name was not escaped")
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "style=") {
		t.Error("the page has inline script or style, which the CSP forbids")
	}
	if !strings.Contains(body, `name="csrf" value="tok"`) {
		t.Error("the sign-out form has no CSRF field")
	}
}

// One token signing in over and over replaces its own oldest sessions and
// does not push another token's session out of the total bound.
func TestSessionsPerTokenBound(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &Sessions{Idle: time.Hour, Lifetime: 2 * time.Hour, Max: 10, PerToken: 3, Now: func() time.Time { return now }}
	other, _ := s.Create("other-token", "globex")
	for range 50 {
		now = now.Add(time.Second)
		s.Create("noisy-token", "acme")
	}
	if s.Get(other, false) == nil {
		t.Fatal("another token's session was dropped by one token's sign-ins")
	}
	if n := s.Len(); n != 4 {
		t.Fatalf("%d sessions held, want 3 of the noisy token and 1 other", n)
	}
}
