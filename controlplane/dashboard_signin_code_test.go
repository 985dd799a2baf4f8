package controlplane_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/controlplane/ui"
)

// useSignInLink opens a sign-in link as a fresh browser would (GET the
// form, then post it with the form's CSRF cookie) and returns the post's
// status, body and session cookie (nil when none was set).
func useSignInLink(t *testing.T, env *cptest.Env, link string) (int, string, *http.Cookie) {
	t.Helper()
	hc := env.NoRedirectClient()
	resp, err := hc.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", link, resp.StatusCode, page)
	}
	var signin *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == ui.SignInCookie {
			signin = c
		}
	}
	field := func(name string) string {
		m := regexp.MustCompile(`name="` + name + `" value="([^"]+)"`).FindStringSubmatch(string(page))
		if m == nil || signin == nil {
			t.Fatalf("the link's page has no %s field or no form cookie:\n%s", name, page)
		}
		return m[1]
	}
	form := url.Values{"csrf": {field("csrf")}, "code": {field("code")}}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", env.URL+ui.PathSignInCode, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(signin)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == ui.SessionCookie && c.Value != "" {
			return resp.StatusCode, string(body), c
		}
	}
	return resp.StatusCode, string(body), nil
}

// TestDashboardSignInLink: a token holder's one-time link carries a code,
// not the token; opening it does not spend it; posting its form signs the
// browser in as that token once; a used, expired or orphaned link is
// refused.
func TestDashboardSignInLink(t *testing.T) {
	clock := &cptest.Clock{}
	env := cptest.Start(t, cptest.Options{Clock: clock})
	acme := env.NewTenant("acme")
	ctx := t.Context()
	link, err := acme.Client.DashboardSignInLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link.URL, env.URL+ui.PathSignInCode+"?code=") || strings.Contains(link.URL, acme.Token) {
		t.Fatalf("link %q: want the sign-in code URL, without the token", link.URL)
	}
	if d := time.Until(link.ExpiresAt); d <= 0 || d > 10*time.Minute {
		t.Errorf("link expires in %s, want within 10 minutes", d)
	}
	status, body, session := useSignInLink(t, env, link.URL) // the GET inside did not spend it
	if status != http.StatusSeeOther || session == nil {
		t.Fatalf("using the link: %d, session %v\n%s", status, session, body)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", env.URL+ui.PathFleet, nil)
	req.AddCookie(session)
	resp, err := env.NoRedirectClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "tenant <strong>acme</strong>") {
		t.Fatalf("fleet with the link's session: %d", resp.StatusCode)
	}
	if status, body, session := useSignInLink(t, env, link.URL); status != http.StatusUnauthorized || session != nil || !strings.Contains(body, "used already or expired") {
		t.Errorf("the link used twice: %d, session %v", status, session)
	}

	late, err := acme.Client.DashboardSignInLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(11 * time.Minute)
	if status, _, session := useSignInLink(t, env, late.URL); status != http.StatusUnauthorized || session != nil {
		t.Errorf("a link used after 11 minutes: %d, session %v", status, session)
	}

	orphan, err := acme.Client.DashboardSignInLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := acme.Client.ListTokens(ctx)
	if err != nil || len(toks) != 1 {
		t.Fatalf("tokens %v, %v", toks, err)
	}
	if err := acme.Client.DeleteToken(ctx, toks[0].ID); err != nil {
		t.Fatal(err)
	}
	if status, _, session := useSignInLink(t, env, orphan.URL); status != http.StatusUnauthorized || session != nil {
		t.Errorf("a link of a deleted token: %d, session %v", status, session)
	}
	evs, err := env.Store().ListAudit(ctx, "acme", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	links := 0
	for _, e := range evs {
		if e.Action == "ui.signinlink" {
			links++
		}
	}
	if links != 3 {
		t.Errorf("%d ui.signinlink audit events, want 3", links)
	}
}

// TestDashboardSignInLinkBounds: a token's sixth link voids its first
// (the others stay valid); a tenant's tokens together hold at most 100
// live links, the next is refused with 429 and Retry-After until they are
// used or expire; another tenant is not affected.
func TestDashboardSignInLinkBounds(t *testing.T) {
	clock := &cptest.Clock{}
	env := cptest.Start(t, cptest.Options{Clock: clock})
	acme := env.NewTenant("acme")
	other := env.NewTenant("other")
	ctx := t.Context()
	var links []string
	for range 6 {
		l, err := acme.Client.DashboardSignInLink(ctx)
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, l.URL)
	}
	if status, _, session := useSignInLink(t, env, links[0]); status != http.StatusUnauthorized || session != nil {
		t.Errorf("a token's first link after its sixth: %d, session %v; want it voided", status, session)
	}
	if status, body, session := useSignInLink(t, env, links[1]); status != http.StatusSeeOther || session == nil {
		t.Errorf("a token's second link after its sixth: %d\n%s", status, body)
	}

	// 4 live links of acme's first token; 19 more tokens with 5 each
	// make 99; then one more of a new token is the 100th.
	for i := range 20 {
		tok, err := env.Admin.CreateToken(ctx, api.CreateTokenRequest{Tenant: "acme", Name: fmt.Sprintf("t%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		c := env.UserClient(tok.Token, "")
		n := 5
		if i == 19 {
			n = 1
		}
		for range n {
			if _, err := c.DashboardSignInLink(ctx); err != nil {
				t.Fatalf("token %d: %v", i, err)
			}
		}
	}
	_, err := acme.Client.DashboardSignInLink(ctx)
	var apiErr *api.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusTooManyRequests || apiErr.Code != api.CodeRateLimited || apiErr.RetryAfter <= 0 {
		t.Fatalf("link 101 of a tenant: %v; want 429 rate_limited with Retry-After", err)
	}
	if _, err := other.Client.DashboardSignInLink(ctx); err != nil {
		t.Errorf("another tenant's link while acme is at its bound: %v", err)
	}
	clock.Advance(11 * time.Minute)
	if _, err := acme.Client.DashboardSignInLink(ctx); err != nil {
		t.Errorf("a link once the others expired: %v", err)
	}
}
