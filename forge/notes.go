package forge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/gitcopy"
	"github.com/nkudo/nkudo/internal/localsource"
)

// NotesRef is the ref n-kudo keeps its statuses under.
const NotesRef = "refs/notes/nkudo"

// NotesOptions configures a git-notes status writer.
type NotesOptions struct {
	// Dir is a bare repository the writer owns (created when missing);
	// it holds only the notes history, never a checkout.
	Dir string
	// RemoteURL is the repository the notes are pushed to.
	RemoteURL string
	// Auth authenticates fetch and push; nil for none (local paths, file://).
	Auth transport.AuthMethod
	// Author names the notes commits; empty means "n-kudo".
	Author string
	// LocalSources decides whether a remote on the local file system may
	// be written; its zero value refuses every local remote. It is checked
	// at every fetch and push, on the resolved path.
	LocalSources localsource.Policy
	// Egress scopes fetches and pushes over HTTP(S) to the egress policy
	// (see egress.InstallGit); nil leaves them unscoped, which the
	// installed transport refuses.
	Egress *egress.Git
}

// Notes writes statuses as git notes under refs/notes/nkudo, one note per
// commit holding one JSON line per context, and pushes them, for forges
// without a status API. `git notes --ref=nkudo show <sha>` shows them.
//
// A remote on the local file system (a path or file:// URL) is written
// in-process: objects are copied into it and its ref is compare-and-swapped
// under git's lock-file protocol, never through a git subprocess. Network
// remotes (HTTP, SSH) use go-git's transports. Either way a post that finds
// the remote ref moved (another writer, another replica) fetches, rebuilds
// its notes commit on the new tip and tries again with backoff.
type Notes struct {
	opts  NotesOptions
	lock  chan struct{} // one read-modify-push at a time; waiting honours ctx
	repo  *git.Repository
	local *localRemote // nil for a network remote
}

// NewNotes opens (or creates) the writer's bare repository.
func NewNotes(o NotesOptions) (*Notes, error) {
	if o.Dir == "" || o.RemoteURL == "" {
		return nil, fmt.Errorf("notes writer: dir and remote URL are required")
	}
	if o.Author == "" {
		o.Author = "n-kudo"
	}
	repo, err := git.PlainOpen(o.Dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		if err := os.MkdirAll(o.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("notes writer: %w", err)
		}
		repo, err = git.PlainInit(o.Dir, true)
	}
	if err != nil {
		return nil, fmt.Errorf("notes writer: open %s: %w", o.Dir, err)
	}
	// The remote is recorded under "origin"; a changed URL replaces it.
	if rem, err := repo.Remote("origin"); err == nil {
		if urls := rem.Config().URLs; len(urls) != 1 || urls[0] != o.RemoteURL {
			if err := repo.DeleteRemote("origin"); err != nil {
				return nil, fmt.Errorf("notes writer: %w", err)
			}
		}
	}
	if _, err := repo.Remote("origin"); errors.Is(err, git.ErrRemoteNotFound) {
		if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{o.RemoteURL}}); err != nil {
			return nil, fmt.Errorf("notes writer: add remote %s: %w", SanitizeURL(o.RemoteURL), err)
		}
	}
	n := &Notes{opts: o, repo: repo, lock: make(chan struct{}, 1)}
	if p := gitcopy.LocalPath(o.RemoteURL); p != "" {
		if err := o.LocalSources.CheckPath(p); err != nil {
			return nil, fmt.Errorf("notes writer: %w", err)
		}
		n.local = &localRemote{path: p, policy: o.LocalSources}
	}
	return n, nil
}

// scope puts a network fetch or push under the egress policy.
func (n *Notes) scope(ctx context.Context) context.Context {
	if n.opts.Egress == nil {
		return ctx
	}
	ctx, _ = n.opts.Egress.Context(ctx)
	return ctx
}

func (n *Notes) acquire(ctx context.Context) error {
	select {
	case n.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("notes writer busy: %w", ctx.Err())
	}
}

func (n *Notes) release() { <-n.lock }

// Name implements Writer.
func (n *Notes) Name() string { return "notes" }

// DescriptionLimit implements Writer; notes have no limit but a status
// line stays short.
func (n *Notes) DescriptionLimit() int { return 1000 }

func (n *Notes) refSpec() config.RefSpec {
	return config.RefSpec("+" + NotesRef + ":" + NotesRef)
}

// fetch brings the remote notes history in and returns the remote tip
// (ZeroHash when the remote has no notes yet): the commit a post builds on
// and the value its push expects to replace.
func (n *Notes) fetch(ctx context.Context) (plumbing.Hash, error) {
	name := plumbing.ReferenceName(NotesRef)
	if n.local != nil {
		tip, err := n.local.fetch(ctx, n.repo.Storer)
		if err != nil {
			return plumbing.ZeroHash, &Error{Op: "fetch notes from " + SanitizeURL(n.opts.RemoteURL), Retry: true, Err: err}
		}
		if tip.IsZero() {
			_ = n.repo.Storer.RemoveReference(name)
		} else if err := n.repo.Storer.SetReference(plumbing.NewHashReference(name, tip)); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("update local %s: %w", NotesRef, err)
		}
		return tip, nil
	}
	err := n.repo.FetchContext(n.scope(ctx), &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs:   []config.RefSpec{n.refSpec()},
		Auth:       n.opts.Auth,
		Force:      true,
	})
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
	case errors.Is(err, git.NoMatchingRefSpecError{}) || isNoRemoteRef(err):
		// No notes pushed yet: drop any local leftover so we start clean.
		_ = n.repo.Storer.RemoveReference(name)
		return plumbing.ZeroHash, nil
	default:
		return plumbing.ZeroHash, &Error{Op: "fetch notes from " + SanitizeURL(n.opts.RemoteURL), Retry: true, Err: err}
	}
	ref, err := n.repo.Reference(name, true)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("read %s: %w", NotesRef, err)
	}
	return ref.Hash(), nil
}

func isNoRemoteRef(err error) bool {
	return err != nil && strings.Contains(err.Error(), "couldn't find remote ref")
}

// Current implements Writer.
func (n *Notes) Current(ctx context.Context, sha string) ([]Status, error) {
	if err := n.acquire(ctx); err != nil {
		return nil, err
	}
	defer n.release()
	tip, err := n.fetch(ctx)
	if err != nil {
		return nil, err
	}
	_, tree, err := n.commitAt(tip)
	if err != nil {
		return nil, err
	}
	return n.read(tree, sha)
}

// Post keeps trying, within one call and for at most notesRetryBudget, to
// land a status on a notes ref that keeps moving, backing off between tries;
// after that the error is retryable and the Reporter tries again later. The
// budget is time, not a count of tries: on a loaded host a rival writer can
// hold the ref's lock for longer than a fixed number of short back-offs.
const (
	notesRetryBudget = 30 * time.Second
	notesMinBackoff  = 10 * time.Millisecond
	notesMaxBackoff  = time.Second
)

// Post implements Writer: it replaces the status of st.Context in the
// commit's note and pushes. A push that loses a race fetches, rebuilds the
// notes commit on the new tip and retries with backoff.
func (n *Notes) Post(ctx context.Context, st Status) error {
	if err := n.acquire(ctx); err != nil {
		return err
	}
	defer n.release()
	delay := notesMinBackoff
	giveUp := time.Now().Add(notesRetryBudget)
	for {
		tip, err := n.fetch(ctx)
		if err != nil {
			return err
		}
		err = n.postOnce(ctx, tip, st)
		if err == nil || !errors.Is(err, errRefMoved) {
			return err
		}
		if time.Now().After(giveUp) {
			return &Error{Op: "push notes to " + SanitizeURL(n.opts.RemoteURL), Retry: true, Err: err}
		}
		t := time.NewTimer(delay/2 + rand.N(delay/2+1)) // jitter: racing writers must not retry in step
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("push notes to %s: %w", SanitizeURL(n.opts.RemoteURL), ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, notesMaxBackoff)
	}
}

// commitAt reads the notes commit tip and its tree (nil, nil for ZeroHash).
func (n *Notes) commitAt(tip plumbing.Hash) (*object.Commit, *object.Tree, error) {
	if tip.IsZero() {
		return nil, nil, nil
	}
	c, err := n.repo.CommitObject(tip)
	if err != nil {
		return nil, nil, fmt.Errorf("read notes commit: %w", err)
	}
	t, err := c.Tree()
	if err != nil {
		return nil, nil, fmt.Errorf("read notes tree: %w", err)
	}
	return c, t, nil
}

// read parses the note for sha: flat ("<sha>") or fanned out ("ab/cdef…").
func (n *Notes) read(tree *object.Tree, sha string) ([]Status, error) {
	if tree == nil {
		return nil, nil
	}
	f, err := tree.File(sha)
	if errors.Is(err, object.ErrFileNotFound) && len(sha) > 2 {
		f, err = tree.File(sha[:2] + "/" + sha[2:])
	}
	if errors.Is(err, object.ErrFileNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read note for %s: %w", sha, err)
	}
	body, err := f.Contents()
	if err != nil {
		return nil, fmt.Errorf("read note for %s: %w", sha, err)
	}
	return parseNote(sha, body), nil
}

// parseNote reads one JSON status per line; lines that are not ours
// (written by hand with `git notes`) are ignored.
func parseNote(sha, body string) []Status {
	var out []Status
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var st Status
		if json.Unmarshal([]byte(line), &st) == nil && st.Context != "" {
			st.SHA = sha
			out = append(out, st)
		}
	}
	return out
}

func formatNote(list []Status) []byte {
	sort.Slice(list, func(i, j int) bool { return list[i].Context < list[j].Context })
	var b bytes.Buffer
	for _, st := range list {
		// Each record names its commit, so a line read out of the note
		// (by hand, or copied elsewhere) still says which commit it is about.
		line, _ := json.Marshal(st)
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func (n *Notes) postOnce(ctx context.Context, tip plumbing.Hash, st Status) error {
	parent, tree, err := n.commitAt(tip)
	if err != nil {
		return err
	}
	cur, err := n.read(tree, st.SHA)
	if err != nil {
		return err
	}
	next := []Status{st}
	for _, c := range cur {
		if c.Context != st.Context {
			next = append(next, c)
		}
	}
	blobHash, err := n.writeBlob(formatNote(next))
	if err != nil {
		return err
	}
	var entries []object.TreeEntry
	if tree != nil {
		for _, e := range tree.Entries {
			// Drop both spellings of this note; it is rewritten flat below.
			if e.Name == st.SHA {
				continue
			}
			entries = append(entries, e)
		}
	}
	if tree != nil && len(st.SHA) > 2 {
		// A fanned-out copy lives in a subtree: rewrite that subtree without it.
		entries, err = n.dropFanout(entries, st.SHA)
		if err != nil {
			return err
		}
	}
	entries = append(entries, object.TreeEntry{Name: st.SHA, Mode: filemode.Regular, Hash: blobHash})
	treeHash, err := n.writeTree(entries)
	if err != nil {
		return err
	}
	now := time.Now()
	sig := object.Signature{Name: n.opts.Author, Email: "nkudo@localhost", When: now}
	commit := &object.Commit{
		Author:    sig,
		Committer: sig,
		Message:   "Notes added by n-kudo\n",
		TreeHash:  treeHash,
	}
	if parent != nil {
		commit.ParentHashes = []plumbing.Hash{parent.Hash}
	}
	obj := n.repo.Storer.NewEncodedObject()
	if err := commit.Encode(obj); err != nil {
		return fmt.Errorf("encode notes commit: %w", err)
	}
	ch, err := n.repo.Storer.SetEncodedObject(obj)
	if err != nil {
		return fmt.Errorf("store notes commit: %w", err)
	}
	if n.local != nil {
		if err := n.local.push(ctx, n.repo.Storer, tip, ch); err != nil {
			if errors.Is(err, errRefMoved) {
				return err
			}
			return &Error{Op: "push notes to " + SanitizeURL(n.opts.RemoteURL), Retry: true, Err: err}
		}
		// Best effort: the next post fetches the remote tip anyway.
		_ = n.repo.Storer.SetReference(plumbing.NewHashReference(plumbing.ReferenceName(NotesRef), ch))
		return nil
	}
	if err := n.repo.Storer.SetReference(plumbing.NewHashReference(plumbing.ReferenceName(NotesRef), ch)); err != nil {
		return fmt.Errorf("update %s: %w", NotesRef, err)
	}
	err = n.repo.PushContext(n.scope(ctx), &git.PushOptions{
		RemoteName: "origin",
		RefSpecs:   []config.RefSpec{config.RefSpec(NotesRef + ":" + NotesRef)},
		Auth:       n.opts.Auth,
	})
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
		return nil
	case errors.Is(err, git.ErrForceNeeded), strings.Contains(err.Error(), "non-fast-forward"), strings.Contains(err.Error(), "rejected"), strings.Contains(err.Error(), "fetch first"):
		return fmt.Errorf("%w: %w", errRefMoved, err)
	}
	return &Error{Op: "push notes to " + SanitizeURL(n.opts.RemoteURL), Retry: true, Err: err}
}

func (n *Notes) dropFanout(entries []object.TreeEntry, sha string) ([]object.TreeEntry, error) {
	for i, e := range entries {
		if e.Name != sha[:2] || e.Mode != filemode.Dir {
			continue
		}
		sub, err := n.repo.TreeObject(e.Hash)
		if err != nil {
			return nil, fmt.Errorf("read notes subtree: %w", err)
		}
		var kept []object.TreeEntry
		for _, se := range sub.Entries {
			if se.Name != sha[2:] {
				kept = append(kept, se)
			}
		}
		if len(kept) == len(sub.Entries) {
			return entries, nil
		}
		out := append([]object.TreeEntry{}, entries[:i]...)
		if len(kept) > 0 {
			h, err := n.writeTree(kept)
			if err != nil {
				return nil, err
			}
			out = append(out, object.TreeEntry{Name: e.Name, Mode: filemode.Dir, Hash: h})
		}
		return append(out, entries[i+1:]...), nil
	}
	return entries, nil
}

func (n *Notes) writeBlob(b []byte) (plumbing.Hash, error) {
	obj := n.repo.Storer.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	w, err := obj.Writer()
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("write note: %w", err)
	}
	if _, err := io.Copy(w, bytes.NewReader(b)); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("write note: %w", err)
	}
	if err := w.Close(); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("write note: %w", err)
	}
	h, err := n.repo.Storer.SetEncodedObject(obj)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("store note: %w", err)
	}
	return h, nil
}

// writeTree sorts entries the way git does (a tree sorts as if its name
// ended in '/') and stores the tree.
func (n *Notes) writeTree(entries []object.TreeEntry) (plumbing.Hash, error) {
	key := func(e object.TreeEntry) string {
		if e.Mode == filemode.Dir {
			return e.Name + "/"
		}
		return e.Name
	}
	sort.Slice(entries, func(i, j int) bool { return key(entries[i]) < key(entries[j]) })
	t := &object.Tree{Entries: entries}
	obj := n.repo.Storer.NewEncodedObject()
	if err := t.Encode(obj); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("encode notes tree: %w", err)
	}
	h, err := n.repo.Storer.SetEncodedObject(obj)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("store notes tree: %w", err)
	}
	return h, nil
}
