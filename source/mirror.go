package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/gitcopy"
	"github.com/nkudo/nkudo/internal/localsource"
	"github.com/nkudo/nkudo/store"
)

// ErrNoCommit means the requested ref or commit does not exist in the source.
var ErrNoCommit = errors.New("commit not found")

// RemoteKind classifies a repository URL: its scheme ("https", "ssh",
// "file", …), "ssh" for scp-like git@host:owner/repo.git, "file" for a path.
func RemoteKind(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Scheme != "" && len(u.Scheme) > 1 {
		return u.Scheme
	}
	if strings.Contains(raw, "@") && strings.Contains(raw, ":") && !strings.HasPrefix(raw, "/") {
		return "ssh" // scp-like git@host:owner/repo.git
	}
	return "file"
}

// Auth builds the transport credentials of the repository at rawURL from
// its credential (nil = anonymous) and secret. The caller resolves the
// credential and checks it may be sent to rawURL (store.CheckCredentialUse).
func (s *Mirrors) Auth(rawURL string, cred *store.Credential, sec store.Secret) (transport.AuthMethod, error) {
	if cred == nil {
		if RemoteKind(rawURL) == "ssh" {
			return nil, fmt.Errorf("ssh source %s needs a credentials reference (private key)", forge.SanitizeURL(rawURL))
		}
		return nil, nil
	}
	ref := cred.Name
	switch cred.Kind {
	case store.CredentialToken:
		// GitHub wants x-access-token; GitLab and Gitea accept any user.
		return &githttp.BasicAuth{Username: "x-access-token", Password: sec.Reveal()}, nil
	case store.CredentialBasic:
		user, pass, _ := strings.Cut(sec.Reveal(), ":")
		return &githttp.BasicAuth{Username: user, Password: pass}, nil
	case store.CredentialSSHKey:
		user := "git"
		if u, err := url.Parse(rawURL); err == nil && u.User != nil {
			user = u.User.Username()
		} else if at := strings.Index(rawURL, "@"); at > 0 && !strings.Contains(rawURL[:at], "/") {
			user = rawURL[:at]
		}
		keys, err := gitssh.NewPublicKeys(user, []byte(sec.Reveal()), "")
		if err != nil {
			return nil, fmt.Errorf("ssh key %q: %w", ref, err)
		}
		if strings.TrimSpace(cred.KnownHosts) == "" {
			return nil, fmt.Errorf("ssh source %s: credential %q has no known_hosts: host keys must be pinned", forge.SanitizeURL(rawURL), ref)
		}
		cb, err := s.knownHosts(cred.KnownHosts)
		if err != nil {
			return nil, fmt.Errorf("ssh source %s: known_hosts of %q: %w", forge.SanitizeURL(rawURL), ref, err)
		}
		keys.HostKeyCallback = cb
		return keys, nil
	}
	return nil, fmt.Errorf("credential %q: unknown kind %q", ref, cred.Kind)
}

// knownHosts builds a host-key callback from known_hosts text: the
// knownhosts package reads files only, so the text goes through a private
// temporary file that is gone once the callback is built.
func (s *Mirrors) knownHosts(text string) (gossh.HostKeyCallback, error) {
	f, err := os.CreateTemp(s.dataDir, ".known_hosts-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return knownhosts.New(f.Name())
}

// fetchTimeout bounds one fetch (or listing) of a source, so a remote that
// stops answering cannot hold the repository's lease, and its worker,
// forever. It is generous: a first fetch of a large repository is slow.
const fetchTimeout = 5 * time.Minute

// Mirror is the bare copy of one repository in the data dir. Its methods
// are safe for concurrent use: fetches of one repository take turns.
type Mirror struct {
	mu    sync.Mutex // one fetch at a time per repository
	id    string     // the repository's ID, for logs
	dir   string
	url   string
	local string // the source's path when it is on this machine, else ""
	repo  *git.Repository
	// timeout bounds each fetch and listing (fetchTimeout; tests shorten it).
	timeout time.Duration
	// git scopes network fetches to the egress policy and byte cap;
	// sources says which local paths may be read. Both are checked at
	// every fetch, not only when the repository was registered.
	git     *egress.Git
	sources localsource.Policy
	log     *slog.Logger
}

// Mirror returns the mirror of repository repoID at rawURL, opening (or
// creating) it in the data dir; a changed URL re-points its remote.
func (s *Mirrors) Mirror(repoID, rawURL string) (*Mirror, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.mirrors[repoID]; ok && m.url == rawURL {
		return m, nil
	}
	dir := filepath.Join(s.dataDir, "git", repoID+".git")
	repo, err := git.PlainOpen(dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create mirror: %w", err)
		}
		repo, err = git.PlainInit(dir, true)
	}
	if err == nil {
		repo, err = boundedStorage(repo)
	}
	if err != nil {
		return nil, fmt.Errorf("open mirror %s: %w", dir, err)
	}
	if rem, err := repo.Remote("origin"); err == nil && (len(rem.Config().URLs) != 1 || rem.Config().URLs[0] != rawURL) {
		if err := repo.DeleteRemote("origin"); err != nil {
			return nil, fmt.Errorf("mirror: %w", err)
		}
	}
	if _, err := repo.Remote("origin"); errors.Is(err, git.ErrRemoteNotFound) {
		if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{rawURL}}); err != nil {
			return nil, fmt.Errorf("mirror: add remote %s: %w", forge.SanitizeURL(rawURL), err)
		}
	}
	m := &Mirror{id: repoID, dir: dir, url: rawURL, local: gitcopy.LocalPath(rawURL), repo: repo, timeout: fetchTimeout, git: s.git, sources: s.local, log: s.log}
	s.mirrors[repoID] = m
	return m, nil
}

// FetchBranch brings branch ("" = the remote's default) of repository
// repoID into its mirror and returns its head commit, then checks the
// mirror's size bound (see Check).
func (s *Mirrors) FetchBranch(ctx context.Context, repoID, rawURL string, auth transport.AuthMethod, branch string) (plumbing.Hash, error) {
	m, err := s.Mirror(repoID, rawURL)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	h, _, err := m.FetchBranch(ctx, auth, branch)
	if err != nil {
		return h, err
	}
	return h, s.Check(m)
}

// FetchCommit brings commit sha of repository repoID into its mirror (pr
// > 0: from the pull request's head ref too, when no branch has it), then
// checks the mirror's size bound (see Check).
func (s *Mirrors) FetchCommit(ctx context.Context, repoID, rawURL string, auth transport.AuthMethod, sha string, pr int) error {
	m, err := s.Mirror(repoID, rawURL)
	if err != nil {
		return err
	}
	if err := m.FetchCommit(ctx, auth, sha, pr); err != nil {
		return err
	}
	return s.Check(m)
}

// fetch brings the mirror up to date with refspecs (incremental: only
// missing objects travel). A ref that does not exist remotely is not an
// error when optional is true. Local sources are copied in-process.
func (m *Mirror) fetch(ctx context.Context, auth transport.AuthMethod, specs []config.RefSpec, optional bool) error {
	ctx, cancel := context.WithTimeoutCause(ctx, m.timeout, fmt.Errorf("fetch %s: no answer in %s", forge.SanitizeURL(m.url), m.timeout))
	defer cancel()
	if m.local != "" {
		if err := m.localFetch(ctx, specs, optional); err != nil {
			return fmt.Errorf("fetch %s: %w", m.local, fetchErr(ctx, err))
		}
		return nil
	}
	if err := m.checkRemote(ctx); err != nil {
		return fmt.Errorf("fetch %s: %w", forge.SanitizeURL(m.url), err)
	}
	fctx, budget := m.git.Context(ctx)
	err := m.repo.FetchContext(fctx, &git.FetchOptions{RemoteName: "origin", RefSpecs: specs, Auth: m.git.SSHAuth(auth), Force: true, Tags: git.NoTags})
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
		return nil
	case budget.Err() != nil:
		// go-git's own text for a body cut short says little.
		return fmt.Errorf("fetch %s: %w", forge.SanitizeURL(m.url), budget.Err())
	case optional && (errors.Is(err, git.NoMatchingRefSpecError{}) || strings.Contains(err.Error(), "couldn't find remote ref")):
		return nil
	}
	return fmt.Errorf("fetch %s: %w", forge.SanitizeURL(m.url), Sanitize(fetchErr(ctx, err), m.url))
}

// checkRemote refuses, before dialling, a network source the egress
// policy cannot cover: only HTTP(S) (through the transport egress
// installs) and SSH (host checked here and again on the dialled address)
// are fetched. git:// has no hook for the policy, and no TLS.
func (m *Mirror) checkRemote(ctx context.Context) error {
	if err := egress.CheckGitURL(m.url); err != nil {
		return err
	}
	ep, err := transport.NewEndpoint(m.url)
	if err != nil {
		return fmt.Errorf("source URL: %w", err)
	}
	switch ep.Protocol {
	case "http", "https":
		if !egress.GitInstalled() {
			return fmt.Errorf("%w: git over HTTP(S) needs the egress transport (egress.InstallGit in main)", egress.ErrDenied)
		}
	case "ssh":
		return m.git.Policy().CheckHost(ctx, ep.Host)
	}
	return nil
}

// fetchErr names the timeout when it is why a fetch failed: a transport
// reports only "context deadline exceeded".
func fetchErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w (%w)", err, cause)
	}
	return err
}

// FetchBranch fetches one branch ("" = the remote's default) and returns
// its head commit and the branch name.
func (m *Mirror) FetchBranch(ctx context.Context, auth transport.AuthMethod, branch string) (plumbing.Hash, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if branch == "" {
		b, err := m.defaultBranch(ctx, auth)
		if err != nil {
			return plumbing.ZeroHash, "", err
		}
		branch = b
	}
	local := plumbing.NewBranchReferenceName(branch)
	spec := config.RefSpec("+" + local.String() + ":" + local.String())
	if err := m.fetch(ctx, auth, []config.RefSpec{spec}, false); err != nil {
		return plumbing.ZeroHash, branch, err
	}
	ref, err := m.repo.Reference(local, true)
	if err != nil {
		return plumbing.ZeroHash, branch, fmt.Errorf("branch %s: %w", branch, ErrNoCommit)
	}
	return ref.Hash(), branch, nil
}

// defaultBranch asks the remote where HEAD points.
func (m *Mirror) defaultBranch(ctx context.Context, auth transport.AuthMethod) (string, error) {
	if m.local != "" {
		return m.localDefaultBranch()
	}
	ctx, cancel := context.WithTimeoutCause(ctx, m.timeout, fmt.Errorf("list %s: no answer in %s", forge.SanitizeURL(m.url), m.timeout))
	defer cancel()
	if err := m.checkRemote(ctx); err != nil {
		return "", fmt.Errorf("list %s: %w", forge.SanitizeURL(m.url), err)
	}
	rem, err := m.repo.Remote("origin")
	if err != nil {
		return "", fmt.Errorf("mirror remote: %w", err)
	}
	lctx, _ := m.git.Context(ctx)
	refs, err := rem.ListContext(lctx, &git.ListOptions{Auth: m.git.SSHAuth(auth)})
	if err != nil {
		return "", fmt.Errorf("list %s: %w", forge.SanitizeURL(m.url), Sanitize(fetchErr(ctx, err), m.url))
	}
	for _, ref := range refs {
		if ref.Name() == plumbing.HEAD && ref.Type() == plumbing.SymbolicReference {
			return ref.Target().Short(), nil
		}
	}
	return "", fmt.Errorf("list %s: the remote has no HEAD; set the repository's branch", forge.SanitizeURL(m.url))
}

// FetchCommit makes sure sha is in the mirror: it fetches the branch and,
// for pull-request heads living outside any branch, the forges' PR refs.
func (m *Mirror) FetchCommit(ctx context.Context, auth transport.AuthMethod, sha string, pr int) error {
	h := plumbing.NewHash(sha)
	if _, err := m.repo.CommitObject(h); err == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	specs := []config.RefSpec{"+refs/heads/*:refs/heads/*"}
	if err := m.fetch(ctx, auth, specs, true); err != nil {
		return err
	}
	if _, err := m.repo.CommitObject(h); err == nil {
		return nil
	}
	if pr > 0 {
		for _, s := range []string{
			fmt.Sprintf("+refs/pull/%d/head:refs/pull/%d/head", pr, pr),                     // GitHub, Gitea, Forgejo
			fmt.Sprintf("+refs/merge-requests/%d/head:refs/merge-requests/%d/head", pr, pr), // GitLab
		} {
			if err := m.fetch(ctx, auth, []config.RefSpec{config.RefSpec(s)}, true); err != nil {
				return err
			}
			if _, err := m.repo.CommitObject(h); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("commit %s: %w", sha, ErrNoCommit)
}

// CommitFS returns the tree of commit sha below dir ("" = root) as a
// file system. ErrNoCommit when the mirror lacks the commit.
func (m *Mirror) CommitFS(sha plumbing.Hash, dir string) (*TreeFS, error) {
	c, err := m.repo.CommitObject(sha)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", sha, ErrNoCommit)
	}
	root, err := boundedTree(m.repo.Storer, c.TreeHash)
	if err != nil {
		return nil, fmt.Errorf("commit %s tree: %w", sha, err)
	}
	fsys := NewTreeFS(m.repo.Storer, root, c.Committer.When)
	dir = strings.Trim(filepathToSlash(dir), "/")
	if dir != "" && dir != "." {
		sub, err := fsys.dir(dir)
		if err != nil {
			return nil, fmt.Errorf("path %q in commit %s: %w", dir, sha.String()[:12], err)
		}
		fsys = NewTreeFS(m.repo.Storer, sub, c.Committer.When)
	}
	return fsys, nil
}

// HasCommit reports whether the mirror holds commit h.
func (m *Mirror) HasCommit(h plumbing.Hash) bool {
	_, err := m.repo.CommitObject(h)
	return err == nil
}

func filepathToSlash(p string) string { return strings.ReplaceAll(p, "\\", "/") }
