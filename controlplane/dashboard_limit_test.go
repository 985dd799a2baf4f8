package controlplane_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/controlplane/ui"
)

// signInFrom posts a sign-in form (with a wrong token) as if from addr.
func signInFrom(t *testing.T, h http.Handler, addr string) *httptest.ResponseRecorder {
	t.Helper()
	form := url.Values{"csrf": {"x"}, "token": {"nkudo_wrong"}}
	req := httptest.NewRequestWithContext(t.Context(), "POST", ui.PathSignIn, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: ui.SignInCookie, Value: "x"})
	req.RemoteAddr = addr + ":40000"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func retryAfter(t *testing.T, rec *httptest.ResponseRecorder) int {
	t.Helper()
	n, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if err != nil || n <= 0 {
		t.Errorf("Retry-After %q: want a positive number of seconds", rec.Header().Get("Retry-After"))
	}
	return n
}

// TestDashboardSignInRateLimitedPerAddress: one address that spent its
// burst gets 429 with Retry-After and the sign-in page; another address
// still reaches the token check.
func TestDashboardSignInRateLimitedPerAddress(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) {
		o.SignInBurst, o.SignInRate = 3, rate.Every(time.Hour)
	}})
	h := env.Server().Handler()
	for i := range 3 {
		if rec := signInFrom(t, h, "192.0.2.7"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: status %d, want 401 (wrong token); body: %s", i+1, rec.Code, rec.Body)
		}
	}
	rec := signInFrom(t, h, "192.0.2.7")
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "from 192.0.2.7") {
		t.Fatalf("4th attempt: status %d, want 429 naming the address; body: %s", rec.Code, rec.Body)
	}
	if n := retryAfter(t, rec); n < 3000 {
		t.Errorf("Retry-After %d s: want about an hour (one attempt per hour)", n)
	}
	if rec := signInFrom(t, h, "198.51.100.9"); rec.Code != http.StatusUnauthorized {
		t.Errorf("another address: status %d, want 401 (not limited)", rec.Code)
	}
}

// TestDashboardSignInRateLimitedGlobally: many addresses together cannot
// exceed the global budget, whatever each one's own bucket says.
func TestDashboardSignInRateLimitedGlobally(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) {
		o.SignInGlobalBurst, o.SignInGlobalRate = 4, rate.Every(time.Hour)
	}})
	h := env.Server().Handler()
	for i := range 4 {
		if rec := signInFrom(t, h, "203.0.113."+strconv.Itoa(i)); rec.Code != http.StatusUnauthorized {
			t.Fatalf("address %d: status %d, want 401", i, rec.Code)
		}
	}
	rec := signInFrom(t, h, "203.0.113.200")
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "all clients") {
		t.Fatalf("5th address: status %d, want 429 naming the global limit; body: %s", rec.Code, rec.Body)
	}
	retryAfter(t, rec)
}
