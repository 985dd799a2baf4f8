package giteatest

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// WorkTree is a local clone of a Gitea repository; pushes go over HTTP
// with the admin token.
type WorkTree struct {
	Dir string
}

// Clone clones r (an empty repository is fine) into a temp dir, on main.
func Clone(t testing.TB, r Repo) *WorkTree {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "work")
	Git(t, "", "clone", "--quiet", r.AuthURL, dir)
	Git(t, dir, "checkout", "--quiet", "-B", "main")
	return &WorkTree{Dir: dir}
}

// gitEnv isolates git from the machine's and the user's configuration.
func gitEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return append(env,
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME="+home,
		"GIT_AUTHOR_NAME=n-kudo e2e", "GIT_AUTHOR_EMAIL="+adminEmail,
		"GIT_COMMITTER_NAME=n-kudo e2e", "GIT_COMMITTER_EMAIL="+adminEmail,
		"GIT_TERMINAL_PROMPT=0",
	)
}

// Git runs git in dir and returns its trimmed stdout, failing the test on error.
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

// Write writes files (path relative to the work tree → content); nil
// content removes the file.
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

// CopyTree copies the regular files under src into the work tree at dst
// ("" = the top).
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

// Commit commits every change in the work tree and returns the commit.
func (w *WorkTree) Commit(t testing.TB, msg string) string {
	t.Helper()
	Git(t, w.Dir, "add", "--all")
	Git(t, w.Dir, "commit", "--quiet", "--allow-empty", "-m", msg)
	return Git(t, w.Dir, "rev-parse", "HEAD")
}

// Push pushes HEAD to branch on the Gitea repository.
func (w *WorkTree) Push(t testing.TB, branch string) {
	t.Helper()
	Git(t, w.Dir, "push", "--quiet", "origin", "HEAD:refs/heads/"+branch)
}

// Checkout switches to branch, creating it from HEAD when it does not exist.
func (w *WorkTree) Checkout(t testing.TB, branch string) {
	t.Helper()
	Git(t, w.Dir, "checkout", "--quiet", "-B", branch)
}

// poll calls cond every 100 ms until it returns true (true) or ctx ends
// or 60 s pass (false).
func poll(ctx context.Context, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}
