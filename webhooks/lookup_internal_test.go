package webhooks

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/store"
)

// repoList is a store with nothing but repositories.
type repoList struct {
	mu    sync.Mutex
	repos []store.Repository
	loads int
}

func (l *repoList) ListAllRepositories(context.Context) ([]store.Repository, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loads++
	return append([]store.Repository(nil), l.repos...), nil
}
func (*repoList) WebhookSecret(context.Context, string, string) (store.Secret, error) {
	return "", store.ErrNotFound
}
func (*repoList) RecordDelivery(context.Context, string, string, time.Time) (bool, error) {
	return false, nil
}
func (*repoList) PruneDeliveries(context.Context, time.Time) (int64, error) { return 0, nil }
func (*repoList) RecordPayload(context.Context, string, string, time.Time, time.Duration) (bool, error) {
	return false, nil
}

// TestLookupFindsARepositoryRegisteredAfterTheCacheLoaded: the first push
// to a repository registered just after another delivery loaded the cache
// must not answer 404 (forges do not redeliver), while a burst of unknown
// IDs does not reload the list on every request.
func TestLookupFindsARepositoryRegisteredAfterTheCacheLoaded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	st := &repoList{repos: []store.Repository{{ID: "r1", Tenant: "acme"}}}
	h := New(Options{Store: st, Now: func() time.Time { return now }})
	if _, ok, err := h.lookup(t.Context(), "r1"); !ok || err != nil {
		t.Fatalf("lookup r1 = %v, %v; want found", ok, err)
	}
	st.mu.Lock()
	st.repos = append(st.repos, store.Repository{ID: "r2", Tenant: "acme"})
	st.mu.Unlock()
	now = now.Add(repoMissReloadGap) // well inside the cache's lifetime
	if _, ok, err := h.lookup(t.Context(), "r2"); !ok || err != nil {
		t.Fatalf("lookup of the new r2 = %v, %v; want found without waiting for the cache to expire", ok, err)
	}
	loads := st.loads
	for range 50 {
		if _, ok, _ := h.lookup(t.Context(), "nope"); ok {
			t.Fatal("an unknown ID was found")
		}
	}
	if st.loads != loads {
		t.Errorf("50 unknown IDs at one instant reloaded the list %d times; want 0", st.loads-loads)
	}
}
