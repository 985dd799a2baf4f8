package source

import (
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/gitcopy"
	"github.com/nkudo/nkudo/internal/localsource"
	"github.com/nkudo/nkudo/reconciler/gittest"
)

// newTestMirror returns a mirror of url in a fresh data dir.
func newTestMirror(t testing.TB, url string) *Mirror {
	t.Helper()
	dir := t.TempDir()
	s := New(Options{DataDir: dir,
		Git:   egress.NewGit(egress.Policy{Allow: egress.Loopback()}, 0),
		Local: localsource.Policy{Allow: true, Protected: []string{dir}}})
	m, err := s.Mirror("fleet", url)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// BenchmarkFetchIncrementalLocal: one commit changing one file lands in a
// local source of 50 sites; the timed part is the mirror fetching it.
func BenchmarkFetchIncrementalLocal(b *testing.B) {
	g := gittest.New(b)
	g.Fleet("fleet", 50, 4)
	g.Commit("base")
	m := newTestMirror(b, g.Remote)
	if _, _, err := m.FetchBranch(b.Context(), nil, "main"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		g.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Running", 1+i%8)+fmt.Sprintf("# %d\n", i))
		want := g.Commit(fmt.Sprintf("change %d", i))
		b.StartTimer()
		h, _, err := m.FetchBranch(b.Context(), nil, "main")
		if err != nil {
			b.Fatal(err)
		}
		if h.String() != want {
			b.Fatalf("fetched %s, want %s", h, want)
		}
	}
}

// damageSource breaks the source's copy of the newest commit in one way.
type damage struct {
	name string
	do   func(t *testing.T, g *gittest.Repo)
}

// looseObject is the path of a loose object of the source.
func looseObject(g *gittest.Repo, h string) string {
	return filepath.Join(g.Remote, "objects", h[:2], h[2:])
}

func packFiles(t *testing.T, g *gittest.Repo) []string {
	t.Helper()
	g.Git(g.Remote, "repack", "-a", "-d", "-q")
	packs, err := filepath.Glob(filepath.Join(g.Remote, "objects", "pack", "*.pack"))
	if err != nil || len(packs) == 0 {
		t.Fatalf("no pack after repack: %v", err)
	}
	return packs
}

var damages = []damage{
	{"pack removed", func(t *testing.T, g *gittest.Repo) {
		for _, p := range packFiles(t, g) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
	}},
	{"pack truncated", func(t *testing.T, g *gittest.Repo) {
		for _, p := range packFiles(t, g) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, 0o644)
			if err := os.Truncate(p, fi.Size()/3); err != nil {
				t.Fatal(err)
			}
		}
	}},
	{"loose blob garbled", func(t *testing.T, g *gittest.Repo) {
		explode(t, g)
		p := looseObject(g, g.Git(g.Work, "rev-parse", "HEAD:fleet/site-0001.yaml"))
		os.Chmod(p, 0o644)
		if err := os.WriteFile(p, []byte("not zlib at all"), 0o644); err != nil {
			t.Fatal(err)
		}
	}},
	{"loose blob with other content", func(t *testing.T, g *gittest.Repo) {
		// A well-formed object whose content is not the one its name says
		explode(t, g)
		other := looseObject(g, g.Git(g.Work, "rev-parse", "HEAD~1:fleet/site-0001.yaml"))
		b, err := os.ReadFile(other)
		if errors.Is(err, os.ErrNotExist) {
			b, err = zlibObject("blob", "something else\n")
		}
		if err != nil {
			t.Fatal(err)
		}
		p := looseObject(g, g.Git(g.Work, "rev-parse", "HEAD:fleet/site-0001.yaml"))
		os.Chmod(p, 0o644)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}},
	{"tree missing", func(t *testing.T, g *gittest.Repo) {
		explode(t, g)
		if err := os.Remove(looseObject(g, g.Git(g.Work, "rev-parse", "HEAD:fleet"))); err != nil {
			t.Fatal(err)
		}
	}},
	{"repository removed", func(t *testing.T, g *gittest.Repo) {
		if err := os.RemoveAll(g.Remote); err != nil {
			t.Fatal(err)
		}
	}},
}

// explode turns the source's packs into loose objects.
func explode(t *testing.T, g *gittest.Repo) {
	t.Helper()
	packs, err := filepath.Glob(filepath.Join(g.Remote, "objects", "pack", "*.pack"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range packs {
		aside := filepath.Join(t.TempDir(), filepath.Base(p))
		if err := os.Rename(p, aside); err != nil {
			t.Fatal(err)
		}
		os.Remove(strings.TrimSuffix(p, ".pack") + ".idx")
		f, err := os.Open(aside)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("git", "unpack-objects", "-q")
		cmd.Dir, cmd.Stdin = g.Remote, f
		out, err := cmd.CombinedOutput()
		f.Close()
		if err != nil {
			t.Fatalf("git unpack-objects: %v\n%s", err, out)
		}
	}
}

// zlibObject encodes a loose object.
func zlibObject(kind, content string) ([]byte, error) {
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	fmt.Fprintf(zw, "%s %d\x00%s", kind, len(content), content)
	err := zw.Close()
	return buf.Bytes(), err
}

// TestBrokenLocalSourceIsAnError: a source whose objects are damaged or
// gone when a fetch reads them fails the fetch (it does not hang, as the
// git-upload-pack subprocess of go-git's file transport can), and the
// mirror keeps the last good commit.
func TestBrokenLocalSourceIsAnError(t *testing.T) {
	for _, d := range damages {
		for _, tc := range []struct {
			scheme string
			added  int // files the damaged commit adds: from gitcopy.UnpackLimit on, the copy is a pack
		}{{"", 0}, {"file://", 0}, {"", gitcopy.UnpackLimit}} {
			t.Run(fmt.Sprintf("%s/%s%d", d.name, tc.scheme, tc.added), func(t *testing.T) {
				g := gittest.New(t)
				g.Fleet("fleet", 2, 1)
				c1 := g.Commit("base")
				m := newTestMirror(t, tc.scheme+g.Remote)
				if h, _, err := m.FetchBranch(t.Context(), nil, "main"); err != nil || h.String() != c1 {
					t.Fatalf("first fetch: %s, %v", h, err)
				}
				g.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Stopped", 3))
				for i := range tc.added {
					g.Write(fmt.Sprintf("extra/%03d.yaml", i), gittest.VM("site-0002", fmt.Sprintf("vm-x%03d", i), "Running", 1))
				}
				c2 := g.Commit("change")
				d.do(t, g)

				h, _, err := m.FetchBranch(t.Context(), nil, "main")
				if err == nil {
					t.Fatalf("fetch of a broken source succeeded: %s", h)
				}
				t.Logf("fetch: %v", err)
				if ref, rerr := m.repo.Reference(plumbing.NewBranchReferenceName("main"), true); rerr != nil || ref.Hash().String() != c1 {
					t.Errorf("mirror main = %v (%v), want the last good commit %s", ref, rerr, c1)
				}
				if _, err := m.repo.CommitObject(plumbing.NewHash(c2)); err == nil {
					t.Errorf("the mirror holds commit %s although the fetch failed", c2)
				}
			})
		}
	}
}

// TestLocalFetch covers what a local source answers: its default branch,
// a missing branch, a branch moved back by a force-push, and pull-request
// heads outside any branch.
func TestLocalFetch(t *testing.T) {
	g := gittest.New(t)
	g.Fleet("fleet", gitcopy.UnpackLimit, 1) // the first fetch copies a pack, the later ones loose objects
	c1 := g.Commit("one")
	g.Write("fleet/site-0001.yaml", gittest.Site("site-0001"))
	c2 := g.Commit("two")
	g.Write("fleet/extra.yaml", gittest.VM("site-0001", "vm-09", "Running", 1))
	pr := g.PushBranch("feature", "feature")
	g.Git(g.Remote, "update-ref", "refs/pull/7/head", pr)
	g.Git(g.Remote, "update-ref", "-d", "refs/heads/feature")

	for _, url := range []string{g.Remote, "file://" + g.Remote, strings.TrimSuffix(g.Remote, ".git")} {
		m := newTestMirror(t, url)
		h, branch, err := m.FetchBranch(t.Context(), nil, "")
		if err != nil || branch != "main" || h.String() != c2 {
			t.Fatalf("%s: default branch fetch = %s %q %v, want %s main", url, h, branch, err, c2)
		}
		if out, err := exec.Command("git", "-C", m.dir, "fsck", "--no-dangling", "--connectivity-only").CombinedOutput(); err != nil {
			t.Errorf("%s: the mirror is not whole: %v\n%s", url, err, out)
		}
		if packs, _ := filepath.Glob(filepath.Join(m.dir, "objects", "pack", "*.pack")); len(packs) != 1 {
			t.Errorf("%s: the first fetch left packs %v, want one", url, packs)
		}
		if fsys, err := m.CommitFS(h, "fleet"); err != nil {
			t.Errorf("%s: tree of %s: %v", url, h, err)
		} else if b, err := fs.ReadFile(fsys, "site-0001.yaml"); err != nil || string(b) != gittest.Site("site-0001") {
			t.Errorf("%s: site-0001.yaml = %q, %v", url, b, err)
		}
		if _, _, err := m.FetchBranch(t.Context(), nil, "nope"); err == nil || !strings.Contains(err.Error(), "refs/heads/nope") {
			t.Errorf("%s: fetch of a missing branch: %v", url, err)
		}
		if err := m.FetchCommit(t.Context(), nil, pr, 0); !errors.Is(err, ErrNoCommit) {
			t.Errorf("%s: a commit only a pull-request ref holds, without the PR number: %v", url, err)
		}
		if err := m.FetchCommit(t.Context(), nil, pr, 7); err != nil {
			t.Errorf("%s: pull-request head: %v", url, err)
		}
		g.ResetHard(c1)
		if h, _, err := m.FetchBranch(t.Context(), nil, "main"); err != nil || h.String() != c1 {
			t.Errorf("%s: after a force-push back: %s %v, want %s", url, h, err, c1)
		}
		g.ResetHard(c2)
	}
}

// TestFetchHonoursContext: a cancelled or expired fetch stops, local or
// remote; a remote that never answers is cut off by the fetch timeout.
func TestFetchHonoursContext(t *testing.T) {
	g := gittest.New(t)
	g.Fleet("fleet", 1, 1)
	g.Commit("one")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	m := newTestMirror(t, g.Remote)
	if _, _, err := m.FetchBranch(ctx, nil, "main"); !errors.Is(err, context.Canceled) {
		t.Errorf("local fetch with a cancelled context: %v", err)
	}

	// An HTTP remote that accepts the request and never answers.
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(stuck.Close)
	for _, branch := range []string{"main", ""} { // a fetch, a listing of HEAD
		m := newTestMirror(t, stuck.URL+"/fleet.git")
		m.timeout = 100 * time.Millisecond
		_, _, err := m.FetchBranch(t.Context(), nil, branch)
		if err == nil || !strings.Contains(err.Error(), "no answer in") {
			t.Errorf("fetch %q from a remote that never answers: %v", branch, err)
		}
	}
}

// BenchmarkFetchColdLocal: a first fetch of a local source of 1000 sites
// into an empty mirror.
func BenchmarkFetchColdLocal(b *testing.B) {
	g := gittest.New(b)
	g.Fleet("fleet", 1000, 10)
	want := g.Commit("base")
	for b.Loop() {
		b.StopTimer()
		m := newTestMirror(b, g.Remote)
		b.StartTimer()
		h, _, err := m.FetchBranch(b.Context(), nil, "main")
		if err != nil {
			b.Fatal(err)
		}
		if h.String() != want {
			b.Fatalf("fetched %s, want %s", h, want)
		}
	}
}

func TestLocalGitDir(t *testing.T) {
	r := gittest.New(t)
	for _, tc := range []struct{ url, want string }{
		{r.Remote, r.Remote},
		{"file://" + r.Remote, r.Remote},
		{r.Work, filepath.Join(r.Work, ".git")},
		{filepath.Join(t.TempDir(), "missing"), ""},
		{"https://example.com/fleet.git", ""},
		{"git@example.com:fleet.git", ""},
	} {
		if got := localGitDir(tc.url); got != tc.want {
			t.Errorf("localGitDir(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
}
