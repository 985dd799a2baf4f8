package reconciler_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/localsource"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// TestLocalSourceRefusedByDefault: without --allow-local-sources a path
// or file:// source is never read.
func TestLocalSourceRefusedByDefault(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) { o.AllowLocalSources = false })
	e.git.Fleet("fleet", 1, 1)
	e.git.Commit("one")
	for _, url := range []string{e.git.Remote, "file://" + e.git.Remote} {
		if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{URL: &url}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.reconcile(""); !errors.Is(err, localsource.ErrRefused) {
			t.Errorf("source %s: err = %v, want ErrRefused", url, err)
		}
	}
	if len(e.plans()) != 0 {
		t.Error("a refused source was planned")
	}
}

// TestSourceInsideDataDirRefused: with local sources allowed, another
// tenant's bare mirror in the data dir is still no source, by its path,
// through a symlink, or by a symlink swapped after the repository was
// registered and fetched once.
func TestSourceInsideDataDirRefused(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	e.git.Fleet("fleet", 1, 1)
	e.git.Commit("one")
	e.mustReconcile() // acme's mirror now exists in the data dir
	mirror := filepath.Join(e.opts.DataDir, "git", e.repo.ID+".git")
	if _, err := os.Stat(mirror); err != nil {
		t.Fatalf("acme's mirror: %v", err)
	}

	ctx := t.Context()
	if _, err := e.st.CreateTenant(ctx, admin, store.Tenant{ID: "mallory"}); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "innocent.git")
	if err := os.Symlink(mirror, link); err != nil {
		t.Fatal(err)
	}
	for i, url := range []string{mirror, "file://" + mirror, link, filepath.Join(e.opts.DataDir, "git", "..", "git", e.repo.ID+".git")} {
		repo, err := e.st.CreateRepository(ctx, admin, store.Repository{Tenant: "mallory", Name: "steal" + string(rune('a'+i)), URL: url, Branch: "main"}, "hook-secret")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.rec.Reconcile(ctx, repo, ""); !errors.Is(err, localsource.ErrRefused) {
			t.Errorf("mallory's source %s: err = %v, want ErrRefused", url, err)
		}
	}

	// Checked at use: a symlink that led to a fine repository at the
	// first fetch and to the mirror at the next is refused then.
	other := gittest.New(t)
	other.Fleet("fleet", 1, 1)
	other.Commit("mallory's own")
	swap := filepath.Join(t.TempDir(), "swap.git")
	if err := os.Symlink(other.Remote, swap); err != nil {
		t.Fatal(err)
	}
	repo, err := e.st.CreateRepository(ctx, admin, store.Repository{Tenant: "mallory", Name: "swap", URL: swap, Branch: "main"}, "hook-secret")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.rec.Reconcile(ctx, repo, ""); err != nil {
		t.Fatalf("mallory's own repository: %v", err)
	}
	if err := os.Remove(swap); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(mirror, swap); err != nil {
		t.Fatal(err)
	}
	e.git.Write("fleet/extra.yaml", gittest.Site("site-0002"))
	e.git.Commit("two")
	if _, err := e.rec.Reconcile(ctx, repo, ""); !errors.Is(err, localsource.ErrRefused) {
		t.Errorf("swapped symlink: err = %v, want ErrRefused", err)
	}
}

// TestHTTPSourceEgress: a git server on loopback is refused without the
// allow-list, by address and by a name resolving to it; a redirect from an
// allowed server to a denied address is refused; a fetch over the byte
// cap fails naming the limit.
func TestHTTPSourceEgress(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) { o.Egress = egress.Policy{} })
	e.git.Fleet("fleet", 40, 4) // a pack well over e2's cap
	e.git.Commit("one")
	url := gitHTTPServer(t, e.git, "")
	_, port, _ := net.SplitHostPort(strings.Split(url, "/")[2])
	byName := "http://localhost:" + port + "/" + filepath.Base(e.git.Remote)
	for _, u := range []string{url, byName} {
		if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{URL: &u}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.reconcile(""); !isDenied(err) {
			t.Errorf("source %s under the default policy: err = %v, want it denied", u, err)
		}
	}

	// 127.0.0.1 allowed; it redirects to 127.0.0.2, which is not.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("SKIP: listen 127.0.0.2: %v", err)
	}
	var deniedHits int
	denied := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { deniedHits++ })}}
	denied.Start()
	t.Cleanup(denied.Close)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, denied.URL+r.URL.RequestURI(), http.StatusFound)
	}))
	t.Cleanup(redirector.Close)
	e2 := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) {
		o.Egress = egress.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
		o.GitFetchMaxBytes = 2048
	})
	u := redirector.URL + "/fleet.git"
	if _, err := e2.st.UpdateRepository(t.Context(), admin, tenant, e2.repo.ID, store.RepositoryUpdate{URL: &u}); err != nil {
		t.Fatal(err)
	}
	if _, err := e2.reconcile(""); !isDenied(err) {
		t.Errorf("redirect to %s: err = %v, want it denied", denied.URL, err)
	}
	if deniedHits != 0 {
		t.Errorf("the denied server got %d requests", deniedHits)
	}

	// The allowed server itself, over the 2 KiB cap of e2.
	if _, err := e2.st.UpdateRepository(t.Context(), admin, tenant, e2.repo.ID, store.RepositoryUpdate{URL: &url}); err != nil {
		t.Fatal(err)
	}
	if _, err := e2.reconcile(""); !errors.Is(err, egress.ErrTooLarge) || !strings.Contains(err.Error(), "--git-fetch-max-bytes") {
		t.Errorf("fetch over the byte cap: err = %v, want ErrTooLarge naming the flag", err)
	}
}

// isDenied: go-git flattens the transport's error into its text, which
// the fetch error then carries.
func isDenied(err error) bool {
	return errors.Is(err, egress.ErrDenied) || (err != nil && strings.Contains(err.Error(), egress.ErrDenied.Error()))
}
