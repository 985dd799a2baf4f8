package e2etest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// GitHTTPBackend is where Debian and most distributions install git's
// smart-HTTP CGI program.
const GitHTTPBackend = "/usr/lib/git-core/git-http-backend"

// GitServer serves every bare repository under Root over smart HTTP
// (clone, fetch and push) with git http-backend behind net/http/cgi.
type GitServer struct {
	// URL is the server's base URL; a repository is at URL + "/" + name.
	URL  string
	Root string
}

// NewGitServer starts a git server for the test; it stops at cleanup.
// It skips the test loudly when git or git-http-backend is missing.
func NewGitServer(t testing.TB) *GitServer {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("SKIP: git is not installed; the e2e suite needs git and " + GitHTTPBackend)
	}
	if _, err := os.Stat(GitHTTPBackend); err != nil {
		t.Skipf("SKIP: %s is missing (%v); install git's http-backend", GitHTTPBackend, err)
	}
	root := t.TempDir()
	h := &cgi.Handler{
		Path: GitHTTPBackend,
		Env: []string{
			"GIT_PROJECT_ROOT=" + root,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"HOME=" + root,
		},
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &GitServer{URL: srv.URL, Root: root}
}

// InitBare creates an empty bare repository that accepts pushes over HTTP
// and returns its clone URL.
func (g *GitServer) InitBare(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(g.Root, name)
	Git(t, "", "init", "--quiet", "--bare", "--initial-branch=main", dir)
	Git(t, dir, "config", "http.receivepack", "true")
	return g.URL + "/" + name
}

// gitEnv isolates git from the user's and the machine's configuration,
// and from GIT_* variables of an enclosing git process (a hook, say).
func gitEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return append(env,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"HOME="+home,
		"GIT_AUTHOR_NAME=n-kudo e2e", "GIT_AUTHOR_EMAIL=e2e@nkudo.invalid",
		"GIT_COMMITTER_NAME=n-kudo e2e", "GIT_COMMITTER_EMAIL=e2e@nkudo.invalid",
		"GIT_TERMINAL_PROMPT=0",
	)
}

// Git runs git in dir and returns its trimmed stdout; it fails the test on error.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "git", args...)
	cmd.Dir = dir
	home := dir
	if home == "" {
		home = os.TempDir()
	}
	cmd.Env = gitEnv(home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("git %s (in %s): %v\n%s%s", strings.Join(args, " "), dir, err, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// WorkTree is a clone of a repository served by a GitServer.
type WorkTree struct {
	Dir    string
	Branch string
}

// Clone clones url into a new temp dir (an empty repository is fine).
func Clone(t testing.TB, url string) *WorkTree {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "work")
	Git(t, "", "clone", "--quiet", url, dir)
	Git(t, dir, "checkout", "--quiet", "-B", "main")
	return &WorkTree{Dir: dir, Branch: "main"}
}

// CopyTree copies the regular files of src (a directory) into the work
// tree under dst ("" = the top).
func (w *WorkTree) CopyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(w.Dir, dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s into the work tree: %v", src, err)
	}
}

// Write writes (or, with nil content, removes) files relative to the work tree.
func (w *WorkTree) Write(t testing.TB, files map[string][]byte) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(w.Dir, name)
		if content == nil {
			if err := os.Remove(p); err != nil {
				t.Fatalf("remove %s: %v", name, err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
}

// Edit rewrites one file of the work tree with fn, failing the test when
// fn leaves it unchanged (an edit that silently matched nothing).
func (w *WorkTree) Edit(t testing.TB, name string, fn func(string) string) {
	t.Helper()
	p := filepath.Join(w.Dir, name)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("edit %s: %v", name, err)
	}
	out := fn(string(b))
	if out == string(b) {
		t.Fatalf("edit %s: the edit changed nothing", name)
	}
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatalf("edit %s: %v", name, err)
	}
}

// CommitAndPush commits everything in the work tree and pushes it; it
// returns the pushed commit and the commit the branch had before ("" for
// the first push).
func (w *WorkTree) CommitAndPush(t testing.TB, msg string) (before, after string) {
	t.Helper()
	before = strings.TrimSpace(gitOrEmpty(w.Dir, "rev-parse", "--verify", "--quiet", "HEAD"))
	Git(t, w.Dir, "add", "--all")
	Git(t, w.Dir, "commit", "--quiet", "-m", msg)
	after = Git(t, w.Dir, "rev-parse", "HEAD")
	Git(t, w.Dir, "push", "--quiet", "origin", "HEAD:refs/heads/"+w.Branch)
	return before, after
}

func gitOrEmpty(dir string, args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv(dir)
	out, _ := cmd.Output()
	return string(out)
}

// PushEvent is a GitHub-style push delivery.
type PushEvent struct {
	Ref, Before, After, DefaultBranch string
}

// DeliverGitHubPush posts a signed GitHub push event (X-Hub-Signature-256
// over the body with secret) to url and returns the HTTP status and body.
// Each call uses a fresh delivery ID unless deliveryID is set.
func DeliverGitHubPush(ctx context.Context, hc *http.Client, url, secret, deliveryID string, ev PushEvent) (int, string, error) {
	if ev.Before == "" {
		ev.Before = strings.Repeat("0", 40)
	}
	if ev.DefaultBranch == "" {
		ev.DefaultBranch = "main"
	}
	body, err := json.Marshal(map[string]any{
		"ref": ev.Ref, "before": ev.Before, "after": ev.After,
		"repository": map[string]any{"default_branch": ev.DefaultBranch},
	})
	if err != nil {
		return 0, "", fmt.Errorf("encode push event: %w", err)
	}
	if deliveryID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		deliveryID = hex.EncodeToString(b[:])
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", deliveryID)
	req.Header.Set("X-Hub-Signature-256", "sha256="+Sign(body, secret))
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("deliver webhook: %w", err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(rb), nil
}

// Sign is the hex HMAC-SHA256 of body under secret, as GitHub signs.
func Sign(body []byte, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}
