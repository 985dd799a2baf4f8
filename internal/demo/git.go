package demo

import (
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/format/pktline"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
)

// repo is the demo's tenant repository: a plain git work tree written with
// go-git (no git binary needed) and served read-only over smart HTTP, the
// way a forge serves it.
type repo struct {
	dir string
	r   *git.Repository
	mu  sync.Mutex // commits and fetches do not interleave
}

// initRepo copies src into dir and makes it a git repository on branch main.
func initRepo(dir string, src fs.FS) (*repo, error) {
	if err := copyFS(dir, src); err != nil {
		return nil, err
	}
	r, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{
		InitOptions: git.InitOptions{DefaultBranch: "refs/heads/main"},
	})
	if err != nil {
		return nil, fmt.Errorf("git init %s: %w", dir, err)
	}
	return &repo{dir: dir, r: r}, nil
}

// copyFS copies the regular files of src into dir.
func copyFS(dir string, src fs.FS) error {
	return fs.WalkDir(src, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("copy manifests: %w", err)
		}
		target := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := fs.ReadFile(src, p)
		if err != nil {
			return fmt.Errorf("copy manifests: %w", err)
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// commit stages every change of the work tree and commits it.
func (g *repo) commit(msg string, when time.Time) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	wt, err := g.r.Worktree()
	if err != nil {
		return "", fmt.Errorf("git worktree: %w", err)
	}
	if err := wt.AddWithOptions(&git.AddOptions{All: true}); err != nil {
		return "", fmt.Errorf("git add: %w", err)
	}
	sig := &object.Signature{Name: "n-kudo demo", Email: "demo@nkudo.invalid", When: when}
	h, err := wt.Commit(msg, &git.CommitOptions{Author: sig, Committer: sig, AllowEmptyCommits: false})
	if err != nil {
		return "", fmt.Errorf("git commit: %w", err)
	}
	return h.String(), nil
}

// Handler serves the repository's upload-pack (clone and fetch) over the
// smart HTTP protocol at any path ending in /info/refs or /git-upload-pack.
// Pushes are refused: the demo commits locally.
func (g *repo) Handler() http.Handler {
	srv := server.NewServer(oneRepo{g.r.Storer})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/info/refs"):
			if r.URL.Query().Get("service") != transport.UploadPackServiceName {
				http.Error(w, "only smart HTTP upload-pack is served", http.StatusForbidden)
				return
			}
			g.advertise(w, r, srv)
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/"+transport.UploadPackServiceName):
			g.uploadPack(w, r, srv)
		default:
			http.NotFound(w, r)
		}
	})
}

func (g *repo) session(srv transport.Transport) (transport.UploadPackSession, error) {
	ep, err := transport.NewEndpoint("/demo")
	if err != nil {
		return nil, err
	}
	return srv.NewUploadPackSession(ep, nil)
}

func (g *repo) advertise(w http.ResponseWriter, r *http.Request, srv transport.Transport) {
	g.mu.Lock()
	defer g.mu.Unlock()
	sess, err := g.session(srv)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer sess.Close()
	ar, err := sess.AdvertisedReferencesContext(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ar.Prefix = [][]byte{[]byte("# service=" + transport.UploadPackServiceName), pktline.Flush}
	w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
	w.Header().Set("Cache-Control", "no-cache")
	_ = ar.Encode(w)
}

func (g *repo) uploadPack(w http.ResponseWriter, r *http.Request, srv transport.Transport) {
	g.mu.Lock()
	defer g.mu.Unlock()
	req := packp.NewUploadPackRequest()
	if err := req.Decode(io.LimitReader(r.Body, 10<<20)); err != nil {
		http.Error(w, "bad upload-pack request: "+err.Error(), http.StatusBadRequest)
		return
	}
	sess, err := g.session(srv)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer sess.Close()
	resp, err := sess.UploadPack(r.Context(), req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer resp.Close()
	w.Header().Set("Content-Type", "application/x-git-upload-pack-result")
	w.Header().Set("Cache-Control", "no-cache")
	_ = resp.Encode(w)
}

// oneRepo loads the same storage for every endpoint.
type oneRepo struct{ s storer.Storer }

func (l oneRepo) Load(*transport.Endpoint) (storer.Storer, error) { return l.s, nil }
