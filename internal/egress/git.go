package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
)

// DefaultGitMaxBytes is the default cap on the bytes one git fetch may
// read over HTTP(S): response bodies, pack included.
const DefaultGitMaxBytes int64 = 256 << 20

// ErrTooLarge is wrapped by the error of a fetch that read more than its
// byte cap.
var ErrTooLarge = errors.New("git fetch exceeds its byte limit")

// go-git picks its HTTP transport from a process-wide table
// (client.Protocols); FetchOptions cannot name one. So the transport
// installed there (once, from main) carries no policy of its own: every
// request takes it from its context, which Git.Context sets per fetch, and
// a request whose context has none is refused. Different callers in one
// process (tests, several reconcilers) thus keep different policies, and a
// fetch nobody scoped fails closed.

type gitKey struct{}

// gitTransport is what InstallGit puts into go-git's protocol table.
type gitTransport struct{}

var installed = githttp.NewClient(&http.Client{Transport: gitTransport{}})

// InstallGit routes go-git's http and https transports through the policy
// each fetch's context carries (Git.Context). It changes process-wide
// state, so it belongs in main (and in TestMain of tests that fetch over
// HTTP); calling it again is harmless.
func InstallGit() {
	client.InstallProtocol("http", installed)
	client.InstallProtocol("https", installed)
}

// GitInstalled reports whether InstallGit has run, so a caller can refuse
// to fetch over HTTP without the policy rather than bypass it.
func GitInstalled() bool {
	return client.Protocols["https"] == installed && client.Protocols["http"] == installed
}

// Git is the policy and byte cap of the git fetches of one owner (a
// reconciler). Create it with NewGit; it keeps one connection pool, so
// connections are never shared with another policy.
type Git struct {
	policy   Policy
	maxBytes int64
	rt       *http.Transport
}

// NewGit returns the git scope of p; maxBytes <= 0 means DefaultGitMaxBytes.
func NewGit(p Policy, maxBytes int64) *Git {
	if maxBytes <= 0 {
		maxBytes = DefaultGitMaxBytes
	}
	return &Git{policy: p, maxBytes: maxBytes, rt: p.Transport()}
}

// Policy returns the policy of g.
func (g *Git) Policy() Policy { return g.policy }

// MaxBytes returns the byte cap of one fetch.
func (g *Git) MaxBytes() int64 { return g.maxBytes }

// Fetch is the byte budget of one fetch.
type Fetch struct {
	git  *Git
	left atomic.Int64
	over atomic.Bool
}

// Context returns ctx scoped to one fetch under g, and the fetch's budget.
func (g *Git) Context(ctx context.Context) (context.Context, *Fetch) {
	f := &Fetch{git: g}
	f.left.Store(g.maxBytes)
	return context.WithValue(ctx, gitKey{}, f), f
}

// Err returns an error wrapping ErrTooLarge when the fetch went over its
// cap (the transport's own error text then says little), else nil.
func (f *Fetch) Err() error {
	if f.over.Load() {
		return fmt.Errorf("%w (%d bytes; the operator sets it with --git-fetch-max-bytes)", ErrTooLarge, f.git.maxBytes)
	}
	return nil
}

// RoundTrip implements http.RoundTripper.
func (gitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	f, _ := req.Context().Value(gitKey{}).(*Fetch)
	if f == nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("%w: git request to %s has no egress scope", ErrDenied, req.URL.Host)
	}
	resp, err := f.git.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &capped{ReadCloser: resp.Body, f: f}
	return resp, nil
}

// capped counts a response body against its fetch's budget.
type capped struct {
	io.ReadCloser
	f *Fetch
}

func (c *capped) Read(p []byte) (int, error) {
	// At most one byte past the budget: enough to see the body goes on.
	if left := c.f.left.Load(); left < 0 {
		return 0, c.f.Err()
	} else if int64(len(p)) > left+1 {
		p = p[:left+1]
	}
	n, err := c.ReadCloser.Read(p)
	if c.f.left.Add(-int64(n)) < 0 {
		c.f.over.Store(true)
		return 0, c.f.Err()
	}
	return n, err
}

// SSHAuth returns auth with the policy added to its host-key check, for
// go-git's SSH transport (see Policy.HostKeyCallback); other methods are
// returned as they are.
func (g *Git) SSHAuth(auth transport.AuthMethod) transport.AuthMethod {
	if a, ok := auth.(gitssh.AuthMethod); ok {
		return sshAuth{AuthMethod: a, policy: g.policy}
	}
	return auth
}

type sshAuth struct {
	gitssh.AuthMethod
	policy Policy
}

// ClientConfig wraps the method's host-key check with the policy. A
// method without one would fall back to the user's known_hosts; it is
// refused instead, since nothing would then check the address either.
func (a sshAuth) ClientConfig() (*ssh.ClientConfig, error) {
	c, err := a.AuthMethod.ClientConfig()
	if err != nil {
		return nil, err
	}
	if c.HostKeyCallback == nil {
		return nil, fmt.Errorf("ssh auth %s: no host-key check", a.Name())
	}
	c.HostKeyCallback = a.policy.HostKeyCallback(c.HostKeyCallback)
	return c, nil
}

// CheckGitURL refuses a network git URL whose transport the policy cannot
// cover: only http(s):// and ssh:// (or scp-like user@host:path) are
// fetched; git:// has no hook for the policy and no TLS. Local paths are
// not its business (see internal/localsource).
func CheckGitURL(rawURL string) error {
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil {
		return fmt.Errorf("git URL: %w", err)
	}
	switch ep.Protocol {
	case "http", "https", "ssh", "file":
		return nil
	}
	return fmt.Errorf("%w: scheme %q is not fetched (use https:// or ssh://)", ErrDenied, ep.Protocol)
}
