package cptest

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/nkudo/nkudo/controlplane/ui"
)

// Browser is a signed-in dashboard session, driven without a browser.
type Browser struct {
	env    *Env
	Client *http.Client // reports redirects instead of following them
	Cookie *http.Cookie // the session cookie
	CSRF   string       // the session's form token
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// NoRedirectClient is a client of the server that reports redirects
// instead of following them.
func (e *Env) NoRedirectClient() *http.Client {
	c := e.HTTPClient(nil)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// SignInDashboard signs in on the dashboard with an API token (and a
// tenant, for admin tokens) through the real form: GET / for the form's
// CSRF cookie, POST /ui/signin, then the fleet page for the session's form
// token. It fails the test unless the sign-in succeeds with a session
// cookie that is HttpOnly, Secure and SameSite=Strict.
func (e *Env) SignInDashboard(token, tenant string) *Browser {
	e.t.Helper()
	b := &Browser{env: e, Client: e.NoRedirectClient()}
	resp, err := b.Do("GET", "/", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	var signin *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == ui.SignInCookie {
			signin = c
		}
	}
	if signin == nil {
		e.t.Fatalf("GET / set no %s cookie", ui.SignInCookie)
	}
	form := url.Values{"csrf": {signin.Value}, "token": {token}, "tenant": {tenant}}
	req, _ := http.NewRequestWithContext(e.t.Context(), "POST", e.URL+ui.PathSignIn, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(signin)
	resp, err = b.Client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("sign-in: status %d, want 303; body: %s", resp.StatusCode, body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == ui.SessionCookie {
			b.Cookie = c
		}
	}
	if b.Cookie == nil || !b.Cookie.HttpOnly || !b.Cookie.Secure || b.Cookie.SameSite != http.SameSiteStrictMode {
		e.t.Fatalf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict", b.Cookie)
	}
	status, page := b.Get(ui.PathFleet)
	m := csrfField.FindStringSubmatch(page)
	if status != http.StatusOK || m == nil {
		e.t.Fatalf("fleet after sign-in: status %d, no csrf field; body: %s", status, page)
	}
	b.CSRF = m[1]
	return b
}

// Get fetches path with the session cookie and returns status and body.
func (b *Browser) Get(path string) (int, string) {
	b.env.t.Helper()
	resp, err := b.Do("GET", path, nil)
	if err != nil {
		b.env.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Do sends a request with the session cookie; a non-nil form is posted
// url-encoded. The caller closes the body.
func (b *Browser) Do(method, path string, form url.Values) (*http.Response, error) {
	var rd io.Reader
	if form != nil {
		rd = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(b.env.t.Context(), method, b.env.URL+path, rd)
	if err != nil {
		return nil, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if b.Cookie != nil {
		req.AddCookie(b.Cookie)
	}
	return b.Client.Do(req)
}
