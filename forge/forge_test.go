package forge_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/forge/forgetest"
	"github.com/nkudo/nkudo/internal/localsource"
)

const sha = "0123456789abcdef0123456789abcdef01234567"

func TestTokenNeverPrints(t *testing.T) {
	tok := forge.NewToken("s3cr3t-value")
	holder := struct {
		Token forge.Token `json:"token"`
	}{tok}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "token", tok, "holder", holder)
	js, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	outs := []string{
		fmt.Sprint(tok), fmt.Sprintf("%v %s %q %x %+v %#v", tok, tok, tok, tok, holder, holder),
		string(js), logged.String(),
	}
	for _, o := range outs {
		if strings.Contains(o, "s3cr3t") {
			t.Errorf("secret leaked: %s", o)
		}
	}
	if tok.Reveal() != "s3cr3t-value" {
		t.Errorf("Reveal = %q", tok.Reveal())
	}
}

func TestSanitizeURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://x-access-token:abc@github.com/o/r.git", "https://REDACTED@github.com/o/r.git"},
		{"https://oauth2@gitlab.com/o/r.git", "https://REDACTED@gitlab.com/o/r.git"},
		{"https://example.com/o/r?private_token=abc&x=1", "https://example.com/o/r?private_token=REDACTED&x=1"},
		{"ssh://git@github.com/o/r.git", "ssh://git@github.com/o/r.git"},
		{"git@github.com:o/r.git", "git@github.com:o/r.git"},
		{"/srv/git/r.git", "/srv/git/r.git"},
	} {
		if got := forge.SanitizeURL(tc.in); got != tc.want {
			t.Errorf("SanitizeURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTrim(t *testing.T) {
	long := strings.Repeat("é", 200)
	got := forge.Trim(long, 140)
	if n := len([]rune(got)); n != 140 || !strings.HasSuffix(got, "…") {
		t.Errorf("Trim to 140: %d runes, %q", n, got)
	}
	if got := forge.Trim("short", 140); got != "short" {
		t.Errorf("Trim(short) = %q", got)
	}
}

type writerCase struct {
	name string
	new  func(t *testing.T, srv *forgetest.Server) forge.Writer
}

func writerCases() []writerCase {
	return []writerCase{
		{"github", func(t *testing.T, srv *forgetest.Server) forge.Writer {
			w, err := forge.NewGitHub(forge.GitHubOptions{BaseURL: srv.URL, Owner: "acme", Repo: "fleet", Token: forge.NewToken(srv.Token)})
			if err != nil {
				t.Fatal(err)
			}
			return w
		}},
		{"gitea", func(t *testing.T, srv *forgetest.Server) forge.Writer {
			w, err := forge.NewGitea(forge.GitHubOptions{BaseURL: srv.URL, Owner: "acme", Repo: "fleet", Token: forge.NewToken(srv.Token)})
			if err != nil {
				t.Fatal(err)
			}
			return w
		}},
		{"gitlab", func(t *testing.T, srv *forgetest.Server) forge.Writer {
			w, err := forge.NewGitLab(forge.GitLabOptions{BaseURL: srv.URL, Project: "acme/fleet", Token: forge.NewToken(srv.Token)})
			if err != nil {
				t.Fatal(err)
			}
			return w
		}},
	}
}

func TestWriterPostAndRead(t *testing.T) {
	for _, wc := range writerCases() {
		t.Run(wc.name, func(t *testing.T) {
			srv := forgetest.New(t)
			srv.Token = "forge-token"
			w := wc.new(t, srv)
			for _, st := range []forge.Status{
				{SHA: sha, Context: "nkudo/plan", State: forge.StatePending, Description: "planning"},
				{SHA: sha, Context: "nkudo/plan", State: forge.StateFailure, Description: "refused", TargetURL: "https://cp/commits/" + sha},
				{SHA: sha, Context: "nkudo/validate", State: forge.StateSuccess, Description: "valid"},
			} {
				if err := w.Post(t.Context(), st); err != nil {
					t.Fatalf("Post %+v: %v", st, err)
				}
			}
			got, err := w.Current(t.Context(), sha)
			if err != nil {
				t.Fatal(err)
			}
			want := []forge.Status{
				{SHA: sha, Context: "nkudo/validate", State: forge.StateSuccess, Description: "valid"},
				{SHA: sha, Context: "nkudo/plan", State: forge.StateFailure, Description: "refused", TargetURL: "https://cp/commits/" + sha},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Current (-want +got):\n%s", diff)
			}
			if wc.name == "gitlab" {
				st, _ := srv.Latest(sha, "nkudo/plan")
				if st.State != "failed" {
					t.Errorf("gitlab native state = %q, want failed", st.State)
				}
			}
		})
	}
}

func TestWriterBadToken(t *testing.T) {
	for _, wc := range writerCases() {
		t.Run(wc.name, func(t *testing.T) {
			srv := forgetest.New(t)
			srv.Token = "right"
			good := wc.new(t, srv)
			srv.Token = "other"
			err := good.Post(t.Context(), forge.Status{SHA: sha, Context: "c", State: forge.StateSuccess})
			if err == nil || forge.Retryable(err) {
				t.Fatalf("Post with a wrong token: err = %v, want a permanent error", err)
			}
			if strings.Contains(err.Error(), "right") {
				t.Errorf("error shows the token: %v", err)
			}
		})
	}
}

// waitIdle waits until the reporter has nothing left to post.
func waitIdle(t *testing.T, r *forge.Reporter) {
	t.Helper()
	select {
	case <-r.Idle():
	case <-time.After(10 * time.Second):
		t.Fatal("reporter never became idle")
	}
}

func startReporter(t *testing.T, w forge.Writer, o forge.ReporterOptions) *forge.Reporter {
	t.Helper()
	if o.MinBackoff == 0 {
		o.MinBackoff, o.MaxBackoff = time.Millisecond, 5*time.Millisecond
	}
	o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	r := forge.NewReporter(w, o)
	ctx := t.Context()
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { <-done })
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func TestReporterPostsOnlyChanges(t *testing.T) {
	for _, wc := range writerCases() {
		t.Run(wc.name, func(t *testing.T) {
			srv := forgetest.New(t)
			r := startReporter(t, wc.new(t, srv), forge.ReporterOptions{Prefix: "acme/"})
			long := strings.Repeat("x", 400)
			seq := []forge.Status{
				{SHA: sha, Context: forge.ContextApply, State: forge.StatePending, Description: "2 sites pending"},
				{SHA: sha, Context: forge.ContextApply, State: forge.StatePending, Description: "2 sites pending"},
				{SHA: sha, Context: forge.ContextApply, State: forge.StateSuccess, Description: long},
				{SHA: sha, Context: forge.ContextApply, State: forge.StateSuccess, Description: long},
			}
			for _, st := range seq {
				r.Report(st)
				waitIdle(t, r)
			}
			if got := srv.Posts(); got != 2 {
				t.Errorf("posts = %d, want 2 (repeats skipped): %+v", got, srv.Statuses(sha))
			}
			st, ok := srv.Latest(sha, "acme/nkudo/apply")
			if !ok {
				t.Fatalf("no prefixed status; have %+v", srv.Statuses(sha))
			}
			if n := len([]rune(st.Description)); n > 255 || n < 100 {
				t.Errorf("description length %d not trimmed to the forge limit", n)
			}
			// A fresh reporter (a restart) reads the forge and posts nothing new.
			r2 := startReporter(t, wc.new(t, srv), forge.ReporterOptions{Prefix: "acme/"})
			r2.Report(seq[3])
			waitIdle(t, r2)
			if got := srv.Posts(); got != 2 {
				t.Errorf("after restart posts = %d, want 2", got)
			}
		})
	}
}

func TestReporterRetriesThroughOutage(t *testing.T) {
	srv := forgetest.New(t)
	w, _ := forge.NewGitHub(forge.GitHubOptions{BaseURL: srv.URL, Owner: "o", Repo: "r"})
	r := startReporter(t, w, forge.ReporterOptions{MaxAttempts: 1000})
	srv.SetDown(true)
	start := time.Now()
	for i := range 50 {
		r.Report(forge.Status{SHA: sha, Context: forge.ContextPlan, State: forge.StatePending, Description: fmt.Sprint("step ", i)})
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Report blocked for %v during an outage", d)
	}
	srv.SetDown(false)
	srv.FailNext(3)
	waitIdle(t, r)
	st, ok := srv.Latest(sha, forge.ContextPlan)
	if !ok || st.Description != "step 49" {
		t.Fatalf("latest = %+v, %v; want step 49", st, ok)
	}
	if got := srv.Posts(); got != 1 {
		t.Errorf("posts = %d, want 1 (older queued statuses coalesced)", got)
	}
}

func TestReporterBoundedBuffer(t *testing.T) {
	srv := forgetest.New(t)
	srv.SetDown(true)
	w, _ := forge.NewGitHub(forge.GitHubOptions{BaseURL: srv.URL, Owner: "o", Repo: "r"})
	r := startReporter(t, w, forge.ReporterOptions{Buffer: 3, MaxAttempts: 1000})
	for i := range 10 {
		r.Report(forge.Status{SHA: fmt.Sprintf("%040d", i), Context: forge.ContextPlan, State: forge.StateSuccess})
	}
	srv.SetDown(false)
	waitIdle(t, r)
	var got []string
	for i := range 10 {
		if _, ok := srv.Latest(fmt.Sprintf("%040d", i), forge.ContextPlan); ok {
			got = append(got, fmt.Sprint(i))
		}
	}
	// At most buffer+1 (one may be in flight when the buffer fills); the newest always survive.
	if len(got) > 4 || got[len(got)-1] != "9" {
		t.Errorf("posted commits %v, want at most 4 ending with the newest", got)
	}
}

func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@x", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@x", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestNotes(t *testing.T) {
	root := t.TempDir()
	remote := filepath.Join(root, "remote.git")
	git(t, root, "init", "-q", "--bare", remote)
	work := filepath.Join(root, "work")
	git(t, root, "init", "-q", "-b", "main", work)
	os.WriteFile(filepath.Join(work, "a.yaml"), []byte("x: 1\n"), 0o644)
	git(t, work, "add", ".")
	git(t, work, "commit", "-q", "-m", "one")
	head := git(t, work, "rev-parse", "HEAD")
	git(t, work, "push", "-q", remote, "main")

	newWriter := func(dir string) *forge.Notes {
		n, err := forge.NewNotes(forge.NotesOptions{Dir: filepath.Join(root, dir), RemoteURL: remote, LocalSources: localsource.Policy{Allow: true}})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	a := newWriter("a")
	if cur, err := a.Current(t.Context(), head); err != nil || len(cur) != 0 {
		t.Fatalf("Current before any note = %v, %v", cur, err)
	}
	post := func(w *forge.Notes, st forge.Status) {
		t.Helper()
		st.SHA = head
		if err := w.Post(t.Context(), st); err != nil {
			t.Fatalf("Post: %v", err)
		}
	}
	post(a, forge.Status{Context: "nkudo/validate", State: forge.StateSuccess, Description: "valid"})
	post(a, forge.Status{Context: "nkudo/apply", State: forge.StatePending, Description: "1 site pending"})
	// A second writer (another replica) with its own directory builds on the pushed notes.
	b := newWriter("b")
	post(b, forge.Status{Context: "nkudo/apply", State: forge.StateSuccess, Description: "1 site converged"})
	// The first writer is now behind; its push must fetch and rebase, not clobber.
	post(a, forge.Status{Context: "nkudo/plan", State: forge.StateSuccess, Description: "1 site: 1 create"})

	got, err := newWriter("c").Current(t.Context(), head)
	if err != nil {
		t.Fatal(err)
	}
	want := []forge.Status{
		{SHA: head, Context: "nkudo/apply", State: forge.StateSuccess, Description: "1 site converged"},
		{SHA: head, Context: "nkudo/plan", State: forge.StateSuccess, Description: "1 site: 1 create"},
		{SHA: head, Context: "nkudo/validate", State: forge.StateSuccess, Description: "valid"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Current (-want +got):\n%s", diff)
	}
	// git itself reads the note.
	git(t, work, "fetch", "-q", remote, "refs/notes/nkudo:refs/notes/nkudo")
	shown := git(t, work, "notes", "--ref=nkudo", "show", head)
	if !strings.Contains(shown, `"context":"nkudo/apply","state":"success"`) {
		t.Errorf("git notes show:\n%s", shown)
	}
	// A note written with git (fanned out or not) is kept and read.
	git(t, work, "notes", "--ref=nkudo", "append", "-m", `{"context":"other/ci","state":"failure"}`, head)
	git(t, work, "push", "-q", "-f", remote, "refs/notes/nkudo:refs/notes/nkudo")
	post(a, forge.Status{Context: "nkudo/plan", State: forge.StateFailure, Description: "refused"})
	got, err = newWriter("d").Current(t.Context(), head)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Errorf("after git append: %+v, want 4 contexts", got)
	}
}
