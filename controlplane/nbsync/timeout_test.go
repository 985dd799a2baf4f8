package nbsync_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/controlplane/nbsync"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/backend"
)

type groupsOf []string

func (g groupsOf) DesiredNetBirdGroups(context.Context, string, string) ([]string, bool, error) {
	return g, true, nil
}

// TestSlowManagementHoldsBackOnlyItsTenant: a management server that never
// answers costs its tenant's pass its deadline, and the next tenant is
// still reached in the same pass.
func TestSlowManagementHoldsBackOnlyItsTenant(t *testing.T) {
	ctx := t.Context()
	st, err := backend.Open(ctx, "", t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var mu sync.Mutex
	seen := map[string]bool{}
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("Authorization")] = true
		mu.Unlock()
		<-r.Context().Done() // never answers
	}))
	t.Cleanup(hang.Close)
	actor := store.Actor{Kind: "user", ID: "test"}
	for _, tn := range []string{"acme", "globex"} {
		if _, err := st.CreateTenant(ctx, actor, store.Tenant{ID: tn}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateSite(ctx, actor, tn, "store-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.PutCredential(ctx, actor, store.Credential{Tenant: tn, Name: "netbird", Kind: store.CredentialToken,
			Host: hang.Listener.Addr().String()}, store.Secret("token-"+tn)); err != nil {
			t.Fatal(err)
		}
		if _, err := st.PutNetBirdIntegration(ctx, actor, store.NetBirdIntegration{Tenant: tn, URL: hang.URL, Credential: "netbird"}); err != nil {
			t.Fatal(err)
		}
	}
	// A client without its own timeout: only the pass deadline ends a call.
	s := nbsync.New(nbsync.Options{Store: st, Holder: "r", HTTP: &http.Client{}, Desired: groupsOf{"edge"},
		AllowInsecureCredentials: true, TenantTimeout: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	done := make(chan error, 1)
	go func() { _, err := s.RunOnce(ctx); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a guard against a hang, not a timing assertion
		t.Fatal("a pass over a management server that never answers did not end")
	}
	mu.Lock()
	defer mu.Unlock()
	if !seen["Token token-acme"] || !seen["Token token-globex"] {
		t.Errorf("tenants reached in one pass: %v; want both", seen)
	}
}
