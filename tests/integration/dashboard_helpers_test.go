package integration

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/controlplane/ui"
)

// uiSession is a signed-in dashboard browser, without a browser.
type uiSession struct {
	cookie *http.Cookie
	csrf   string // the session's form token
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// noRedirect is a client of env that reports redirects instead of following them.
func noRedirect(env *cptest.Env) *http.Client {
	c := env.HTTPClient(nil)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// dashboardSignIn signs in on the dashboard with an API token (and a
// tenant, for admin tokens) through the real form: GET / for the form's
// CSRF cookie, POST /ui/signin, then the fleet page for the session's
// form token. It fails the test unless the sign-in succeeds.
func dashboardSignIn(t *testing.T, env *cptest.Env, token, tenant string) uiSession {
	t.Helper()
	hc := noRedirect(env)
	resp, err := hc.Get(env.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var signin *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == ui.SignInCookie {
			signin = c
		}
	}
	if signin == nil {
		t.Fatalf("GET / set no %s cookie", ui.SignInCookie)
	}
	form := url.Values{"csrf": {signin.Value}, "token": {token}, "tenant": {tenant}}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", env.URL+ui.PathSignIn, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(signin)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: status %d, want 303; body: %s", resp.StatusCode, body)
	}
	var s uiSession
	for _, c := range resp.Cookies() {
		if c.Name == ui.SessionCookie {
			s.cookie = c
		}
	}
	if s.cookie == nil || !s.cookie.HttpOnly || !s.cookie.Secure || s.cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict", s.cookie)
	}
	req, _ = http.NewRequestWithContext(t.Context(), "GET", env.URL+ui.PathFleet, nil)
	req.AddCookie(s.cookie)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfField.FindSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("fleet after sign-in: status %d, no csrf field; body: %s", resp.StatusCode, body)
	}
	s.csrf = string(m[1])
	return s
}
