package reconciler_test

import (
	"context"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// gitHTTPServer serves the remote over smart HTTP with the real
// git-http-backend, behind HTTP basic auth with the given token ("": none).
func gitHTTPServer(t *testing.T, g *gittest.Repo, token string) string {
	t.Helper()
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skipf("SKIP: git --exec-path: %v (git-http-backend is needed for the HTTPS source test)", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Skipf("SKIP: %s missing: the HTTPS source test needs git-http-backend", backend)
	}
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(g.Remote), "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pass, ok := r.BasicAuth(); token != "" && (!ok || pass != token) {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/" + filepath.Base(g.Remote)
}

func TestHTTPSSourceWithToken(t *testing.T) {
	// The test server speaks plain http: the server's development opt-in.
	e := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) { o.AllowInsecureCredentials = true })
	e.git.Fleet("fleet", 1, 1)
	c1 := e.git.Commit("one")
	const token = "ghp_s3cr3t-token-value"
	url := gitHTTPServer(t, e.git, token)
	putCredential(t, e.st, tenant, "good", store.CredentialToken, "127.0.0.1", token)
	putCredential(t, e.st, tenant, "bad", store.CredentialToken, "127.0.0.1", "wrong-token")

	for _, tc := range []struct {
		ref     string
		wantErr bool
	}{{"bad", true}, {"good", false}} {
		ref := tc.ref
		if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{URL: &url, CredentialsRef: &ref}); err != nil {
			t.Fatal(err)
		}
		res, err := e.reconcile("")
		if (err != nil) != tc.wantErr {
			t.Fatalf("credentials %q: err = %v", ref, err)
		}
		if err != nil && strings.Contains(err.Error(), "wrong-token") {
			t.Errorf("error shows the credential: %v", err)
		}
		if !tc.wantErr && res.Commit != c1 {
			t.Errorf("fetched %s, want %s", res.Commit, c1)
		}
	}
	repo, _ := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	if strings.Contains(repo.LastError, "token") && strings.Contains(repo.LastError, "wrong") {
		t.Errorf("last error shows the credential: %q", repo.LastError)
	}
}

// putCredential stores a credential of tenant tn.
func putCredential(t *testing.T, st store.Store, tn, name string, kind store.CredentialKind, host, secret string) {
	t.Helper()
	if _, err := st.PutCredential(t.Context(), admin, store.Credential{Tenant: tn, Name: name, Kind: kind, Host: host}, store.Secret(secret)); err != nil {
		t.Fatal(err)
	}
}

// TestCredentialRefusedAtUse: the reconciler resolves a credential by the
// repository's own tenant and checks its host and transport at every
// fetch, whatever the repository row says; the server never sends the
// token in any of these cases.
func TestCredentialRefusedAtUse(t *testing.T) {
	const token = "ghp_other-tenant-token"
	for _, tc := range []struct {
		name      string
		insecure  bool
		setup     func(t *testing.T, e *env) string // returns the ref to use
		wantInErr string
	}{
		{"another tenant's credential", true, func(t *testing.T, e *env) string {
			if _, err := e.st.CreateTenant(t.Context(), admin, store.Tenant{ID: "globex"}); err != nil {
				t.Fatal(err)
			}
			putCredential(t, e.st, "globex", "b-token", store.CredentialToken, "127.0.0.1", token)
			return "b-token"
		}, "no such credential"},
		{"bound to another host", true, func(t *testing.T, e *env) string {
			putCredential(t, e.st, tenant, "elsewhere", store.CredentialToken, "git.example.com", token)
			return "elsewhere"
		}, "bound to host"},
		{"plain http without the opt-in", false, func(t *testing.T, e *env) string {
			putCredential(t, e.st, tenant, "local", store.CredentialToken, "127.0.0.1", token)
			return "local"
		}, "plain http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) { o.AllowInsecureCredentials = tc.insecure })
			e.git.Fleet("fleet", 1, 1)
			e.git.Commit("one")
			var sent atomic.Int64
			url := gitHTTPServerSpy(t, e.git, token, &sent)
			ref := tc.setup(t, e)
			// Edited behind the API's back, as a compromised or careless
			// writer of the database could.
			if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{URL: &url, CredentialsRef: &ref}); err != nil {
				t.Fatal(err)
			}
			_, err := e.reconcile("")
			if err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("reconcile: %v, want an error containing %q", err, tc.wantInErr)
			}
			if n := sent.Load(); n != 0 {
				t.Errorf("the server received the credential %d times", n)
			}
		})
	}
}

// gitHTTPServerSpy is gitHTTPServer counting requests that carry token.
func gitHTTPServerSpy(t *testing.T, g *gittest.Repo, token string, sent *atomic.Int64) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pass, ok := r.BasicAuth(); ok && pass == token {
			sent.Add(1)
		}
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/" + filepath.Base(g.Remote)
}

func TestSSHSourceNeedsPinnedHostKey(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	url := "ssh://git@127.0.0.1:1/acme/fleet.git"
	if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{URL: &url}); err != nil {
		t.Fatal(err)
	}
	_, err := e.reconcile("")
	if err == nil || !strings.Contains(err.Error(), "credentials reference") {
		t.Fatalf("ssh without a key: %v", err)
	}
	dir := t.TempDir()
	key, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "deploy")).CombinedOutput()
	if err != nil {
		t.Skipf("SKIP: ssh-keygen unavailable (%v: %s); the known_hosts check is not exercised", err, key)
	}
	pem, err := os.ReadFile(filepath.Join(dir, "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	putCredential(t, e.st, tenant, "deploy", store.CredentialSSHKey, "127.0.0.1", string(pem))
	ref := "deploy"
	if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{CredentialsRef: &ref}); err != nil {
		t.Fatal(err)
	}
	_, err = e.reconcile("")
	if err == nil || !strings.Contains(err.Error(), "known_hosts") {
		t.Fatalf("ssh without known_hosts: err = %v, want a known_hosts error", err)
	}
}

func TestManifestPathAndSymlinks(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	p := "deploy/fleet"
	if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{Path: &p}); err != nil {
		t.Fatal(err)
	}
	e.git.Fleet("deploy/fleet", 1, 1)
	// Outside the path: never read, even though it is invalid.
	e.git.Write("other/broken.yaml", "kind: Nonsense\n")
	e.git.Commit("fleet under deploy/fleet")
	if res := e.mustReconcile(); len(res.Stored) != 1 {
		t.Fatalf("stored %d plans", len(res.Stored))
	}
	// A symlink inside the path is refused, never followed.
	if err := os.Symlink("/etc/hostname", filepath.Join(e.git.Work, "deploy/fleet/link.yaml")); err != nil {
		t.Fatal(err)
	}
	c2 := e.git.Commit("symlink")
	_, err := e.reconcile("")
	if err == nil || !strings.Contains(e.status(c2, "nkudo/validate").Description, "link.yaml") {
		t.Errorf("symlink: err %v, validate %+v", err, e.status(c2, "nkudo/validate"))
	}
}

func TestPollTrigger(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) { o.PollInterval = 200 * time.Millisecond })
	e.git.Fleet("fleet", 1, 1)
	c1 := e.git.Commit("one")
	runLoop(t, e.rec)
	waitFor(t, "poll reconciles the commit", func() bool {
		repo, _ := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
		return repo.LastAppliedCommit == c1
	})
}

func TestWatchLocalTree(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) { o.WatchLocal = true }) // polling off
	work := e.git.Work
	if _, err := e.st.UpdateRepository(t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{URL: &work}); err != nil {
		t.Fatal(err)
	}
	e.git.Fleet("fleet", 1, 1)
	c1 := e.git.Commit("one")
	runLoop(t, e.rec)
	// Watching begins with a reconcile of what is there.
	waitFor(t, "the commit made before watching reconciled", func() bool {
		repo, _ := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
		return repo.LastAppliedCommit == c1
	})
	e.git.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Stopped", 1))
	c2 := e.git.Commit("stop")
	waitFor(t, "a commit in the working tree reconciled without any trigger", func() bool {
		repo, _ := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
		return repo.LastAppliedCommit == c2
	})
}

func TestLeaseHeldElsewhereSkips(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	e.git.Fleet("fleet", 1, 1)
	e.git.Commit("one")
	if ok, err := e.st.AcquireLease(t.Context(), "reconcile/"+e.repo.ID, "other-replica", time.Minute); !ok || err != nil {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	res, err := e.reconcile("")
	if err != nil || !res.Skipped || len(e.plans()) != 0 {
		t.Errorf("with the lease held elsewhere: skipped %v, err %v, %d plans", res.Skipped, err, len(e.plans()))
	}
}

func TestRestartPostsUnpostedStatuses(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	e.forge.SetDown(true)
	e.git.Fleet("fleet", 1, 1)
	c1 := e.git.Commit("one")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { e.rec.Run(ctx); close(done) }()
	if _, err := e.rec.Reconcile(ctx, e.repo, ""); err != nil {
		t.Fatal(err)
	}
	cancel() // the control plane stops while the forge is down
	<-done
	if st := e.status(c1, "nkudo/plan"); st.State != store.StateSuccess || st.Posted {
		t.Fatalf("before restart: %+v", st)
	}
	e.forge.SetDown(false)
	again, err := reconciler.New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	runLoop(t, again)
	waitFor(t, "statuses posted after the restart", func() bool {
		s, ok := e.forge.Latest(c1, "nkudo/plan")
		return ok && s.State == "success" && e.status(c1, "nkudo/plan").Posted
	})
}
