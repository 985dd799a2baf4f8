package reconciler_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nkudo/nkudo/store"
)

// hangingGit is a git HTTP server that answers nothing: every request
// blocks until the test ends. It counts the requests that reached it.
func hangingGit(t *testing.T) (url string, requests *atomic.Int64) {
	t.Helper()
	requests = &atomic.Int64{}
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before srv.Close, which waits for handlers
	return srv.URL, requests
}

// TestSlowTenantDoesNotStarveOthers: tenant "noisy" has two repositories
// whose source hangs mid-fetch, queued before tenant acme's commit. With
// two workers, noisy may hold only one of them (one task per tenant), so
// acme's commit is applied while noisy's fetch is still stuck.
func TestSlowTenantDoesNotStarveOthers(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	ctx := t.Context()
	url, requests := hangingGit(t)
	if _, err := e.st.CreateTenant(ctx, admin, store.Tenant{ID: "noisy"}); err != nil {
		t.Fatal(err)
	}
	var noisy []store.Repository
	for i := range 2 {
		repo, err := e.st.CreateRepository(ctx, admin, store.Repository{Tenant: "noisy", Name: fmt.Sprint("slow-", i), URL: fmt.Sprintf("%s/slow-%d.git", url, i), Branch: "main"}, "s")
		if err != nil {
			t.Fatal(err)
		}
		noisy = append(noisy, repo)
	}
	runLoop(t, e.rec)
	for _, repo := range noisy {
		if _, err := e.rec.Trigger(ctx, "noisy", repo.ID, ""); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a noisy fetch to reach the hanging server", func() bool { return requests.Load() > 0 })

	e.git.Fleet("fleet", 1, 1)
	head := e.git.Commit("one VM")
	if _, err := e.rec.Trigger(ctx, tenant, e.repo.ID, ""); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second) // noisy's fetches hang for source's fetchTimeout (5 minutes)
	for {
		repo, err := e.st.GetRepository(ctx, tenant, e.repo.ID)
		if err != nil {
			t.Fatal(err)
		}
		if repo.LastAppliedCommit == head {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acme's commit not applied while noisy's fetch hangs (%d requests reached the hanging server)", requests.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d of noisy's fetches reached the server while acme's commit was applied, want 1 (one task per tenant)", n)
	}
	if len(e.plans()) != 1 {
		t.Errorf("acme has %d plans, want 1", len(e.plans()))
	}
}
