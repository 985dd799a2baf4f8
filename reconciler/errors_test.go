package reconciler_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/store"
)

// failingSource points the repository at a real HTTP server that answers
// every request with code, and returns two commits of the real remote that
// the mirror has never fetched.
func failingSource(t *testing.T, e *env, code int) (string, string) {
	t.Helper()
	e.git.Fleet("fleet", 1, 1)
	c1 := e.git.Commit("one")
	e.git.Write("README.md", "two\n")
	c2 := e.git.Commit("two")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "broken", code)
	}))
	t.Cleanup(srv.Close)
	url := srv.URL + "/fleet.git"
	if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{URL: &url}); err != nil {
		t.Fatal(err)
	}
	return c1, c2
}

func asRecErr(t *testing.T, what string, err error) *reconciler.Error {
	t.Helper()
	var re *reconciler.Error
	if !errors.As(err, &re) {
		t.Fatalf("%s: err = %v (%T), want a *reconciler.Error", what, err, err)
	}
	return re
}

// TestFetchFailureReadsTheSame: one fetch failure (the source answering
// 500) reads the same on a commit reconciled by hash and on a pull
// request's head previewed: nkudo/validate=error with one text, a fetch
// failure that is tried again. Only the reconcile sets lastError, and the
// preview stores no preview (nothing was judged).
func TestFetchFailureReadsTheSame(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	c1, c2 := failingSource(t, e, http.StatusInternalServerError)

	_, rerr := e.reconcile(c1)
	re := asRecErr(t, "reconcile", rerr)
	repo, err := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, perr := e.rec.PreviewNow(t.Context(), repo, 7, c2)
	pe := asRecErr(t, "preview", perr)

	for _, x := range []*reconciler.Error{re, pe} {
		if x.Reason != reconciler.ReasonFetch || x.State != store.StateError || !x.Retry {
			t.Errorf("fetch failure = reason %s, state %s, retry %v; want fetch, error, retry", x.Reason, x.State, x.Retry)
		}
	}
	rs, ps := e.status(c1, forge.ContextValidate), e.status(c2, forge.ContextValidate)
	if rs.State != store.StateError || !strings.HasPrefix(rs.Description, "could not fetch the commit: ") || !strings.Contains(rs.Description, "500") {
		t.Errorf("reconcile nkudo/validate = %s %q, want error naming the fetch and the 500", rs.State, rs.Description)
	}
	if ps.State != rs.State || ps.Description != rs.Description {
		t.Errorf("preview nkudo/validate = %s %q\nreconcile nkudo/validate = %s %q\nwant the same", ps.State, ps.Description, rs.State, rs.Description)
	}
	repo, err = e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	if err != nil {
		t.Fatal(err)
	}
	if repo.LastError != rerr.Error() {
		t.Errorf("lastError = %q, want the reconcile's error %q", repo.LastError, rerr.Error())
	}
	if _, err := e.st.GetPreview(t.Context(), tenant, e.repo.ID, 7); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a preview that could not fetch was stored (err %v)", err)
	}
}

// TestFetchErrorKeepsChain: the fetch error's text is sanitized, but its
// cause stays reachable: a source answering 401 is go-git's
// ErrAuthenticationRequired, in a reconcile and in a preview.
func TestFetchErrorKeepsChain(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	c1, c2 := failingSource(t, e, http.StatusUnauthorized)
	_, rerr := e.reconcile("")
	repo, err := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, perr := e.rec.PreviewNow(t.Context(), repo, 7, c2)
	_, cerr := e.reconcile(c1)
	for what, err := range map[string]error{"reconcile of the branch": rerr, "preview": perr, "reconcile of a commit": cerr} {
		asRecErr(t, what, err)
		if !errors.Is(err, transport.ErrAuthenticationRequired) {
			t.Errorf("%s: err = %v; errors.Is(transport.ErrAuthenticationRequired) = false, want the cause kept", what, err)
		}
	}
}
