package reconciler

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/sqlite"
)

type nopWriter struct{}

func (nopWriter) Name() string                                            { return "nop" }
func (nopWriter) DescriptionLimit() int                                   { return 100 }
func (nopWriter) Post(context.Context, forge.Status) error                { return nil }
func (nopWriter) Current(context.Context, string) ([]forge.Status, error) { return nil, nil }

// TestReportersBuiltOnce: reconciles reporting for one repository at the
// same time share one set of reporters; a set built in a race is dropped
// before it runs, so no status lands in a reporter that is then replaced.
func TestReportersBuiltOnce(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var built atomic.Int64
	start := make(chan struct{})
	r, err := New(Options{Store: st, DataDir: t.TempDir(), Writers: func(ctx context.Context, repo store.Repository) ([]forge.Writer, error) {
		built.Add(1)
		<-start // every caller builds before any installs
		return []forge.Writer{nopWriter{}}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	repo := store.Repository{ID: "r1", Tenant: "acme", URL: "file:///x"}
	const callers = 4
	lists := make([][]*forge.Reporter, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			l, err := r.reportersFor(t.Context(), repo)
			if err != nil {
				t.Error(err)
			}
			lists[i] = l
		})
	}
	for built.Load() < callers {
		runtime.Gosched() // until every caller is building
	}
	close(start)
	wg.Wait()
	for i := 1; i < callers; i++ {
		if len(lists[i]) != 1 || lists[i][0] != lists[0][0] {
			t.Fatalf("caller %d got reporters %p, caller 0 got %p: want one shared set", i, lists[i], lists[0])
		}
	}
}

// TestReportersRebuiltOnCredentialsChange: the git-notes writer pushes with
// the repository's own credentials, so changing them must rebuild it.
func TestReportersRebuiltOnCredentialsChange(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var built atomic.Int64
	r, err := New(Options{Store: st, DataDir: t.TempDir(), Writers: func(ctx context.Context, repo store.Repository) ([]forge.Writer, error) {
		built.Add(1)
		return []forge.Writer{nopWriter{}}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	repo := store.Repository{ID: "r1", Tenant: "acme", URL: "https://git.example/fleet.git", ForgeKind: store.ForgeGitNotes, CredentialsRef: "old"}
	for _, ref := range []string{"old", "old", "new"} {
		repo.CredentialsRef = ref
		if _, err := r.reportersFor(t.Context(), repo); err != nil {
			t.Fatal(err)
		}
	}
	if got := built.Load(); got != 2 {
		t.Errorf("writers built %d times for credentials old, old, new; want 2", got)
	}
}

// TestForgeTokenRefusedAtUse: the status writer resolves its token by the
// repository's tenant and checks the forge API's host and transport each
// time it is built, whatever the repository row names.
func TestForgeTokenRefusedAtUse(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	admin := store.Actor{Kind: store.ActorAdmin, ID: "t"}
	for _, tn := range []string{"acme", "globex"} {
		if _, err := st.CreateTenant(ctx, admin, store.Tenant{ID: tn}); err != nil {
			t.Fatal(err)
		}
	}
	put := func(tn, name string, kind store.CredentialKind, host string) {
		t.Helper()
		if _, err := st.PutCredential(ctx, admin, store.Credential{Tenant: tn, Name: name, Kind: kind, Host: host}, store.Secret("tok-"+tn+":"+name)); err != nil {
			t.Fatal(err)
		}
	}
	put("acme", "forge", store.CredentialToken, "git.example")
	put("acme", "basic", store.CredentialBasic, "git.example")
	put("globex", "theirs", store.CredentialToken, "git.example")
	r, err := New(Options{Store: st, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	repo := func(apiURL, ref string) store.Repository {
		return store.Repository{ID: "r1", Tenant: "acme", URL: "https://git.example/acme/fleet.git", ForgeKind: store.ForgeGitea,
			ForgeAPIURL: apiURL, ForgeProject: "acme/fleet", ForgeCredentialsRef: ref}
	}
	if _, err := r.writersFromRepo(ctx, repo("https://git.example/api/v1", "forge")); err != nil {
		t.Fatalf("own token on its host: %v", err)
	}
	for _, tc := range []struct {
		name, apiURL, ref string
	}{
		{"another tenant's credential", "https://git.example/api/v1", "theirs"},
		{"another host", "https://attacker.example/api/v1", "forge"},
		{"plain http", "http://git.example/api/v1", "forge"},
		{"not a token", "https://git.example/api/v1", "basic"},
	} {
		_, err := r.writersFromRepo(ctx, repo(tc.apiURL, tc.ref))
		if !errors.Is(err, store.ErrCredentialUse) {
			t.Errorf("%s: %v, want ErrCredentialUse", tc.name, err)
		}
	}
}
