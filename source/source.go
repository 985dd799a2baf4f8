// Package source owns the git side of the GitOps loop: a bare mirror per
// repository in the data dir (Mirrors), fetched incrementally with go-git
// under the egress policy and its byte cap, or copied in-process from a
// local source the local-source policy allows; the transport credentials
// of a fetch; the read-only fs.FS over a commit's tree (TreeFS) with its
// object-size bounds; the bound on a mirror's size on disk; watching
// local repositories for commits (Watch); and the history walk of commit
// signature verification (Mirror.VerifyHistory).
//
// A mirror is a cache: nothing of a repository's desired state lives only
// in it, so a mirror over its bound is deleted and any replica can rebuild
// it. The package knows nothing of plans, statuses or the reconcile; the
// reconciler resolves credentials and repositories through the store and
// hands them in.
package source

import (
	"log/slog"
	"strings"
	"sync"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/localsource"
)

// Options configures Mirrors. DataDir is required.
type Options struct {
	// DataDir holds the mirrors (DataDir/git/<repo ID>.git) and the
	// short-lived known_hosts files of SSH fetches.
	DataDir string
	// Git is the egress policy and byte cap of network fetches (nil: the
	// zero policy, which refuses internal addresses, and the default cap).
	Git *egress.Git
	// Local says which local paths may be sources; its zero value refuses
	// them all.
	Local localsource.Policy
	// MaxMirrorBytes bounds a mirror on disk, checked after every fetch
	// (0: DefaultMaxMirrorBytes; negative: no limit).
	MaxMirrorBytes int64
	// Logger receives the few warnings of this package (nil: discarded).
	Logger *slog.Logger
}

// Mirrors is the set of repository mirrors of one data dir, one per
// repository ID. Its own lock guards the set; each Mirror serialises its
// own fetches.
type Mirrors struct {
	dataDir  string
	git      *egress.Git
	local    localsource.Policy
	maxBytes int64
	log      *slog.Logger

	mu      sync.Mutex
	mirrors map[string]*Mirror // repo ID → its mirror
}

// New returns the mirror set of o.DataDir; mirrors are opened on first use.
func New(o Options) *Mirrors {
	if o.Git == nil {
		o.Git = egress.NewGit(egress.Policy{}, 0)
	}
	if o.MaxMirrorBytes == 0 {
		o.MaxMirrorBytes = DefaultMaxMirrorBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Mirrors{dataDir: o.DataDir, git: o.Git, local: o.Local, maxBytes: o.MaxMirrorBytes, log: o.Logger, mirrors: map[string]*Mirror{}}
}

// sanitized is an error whose text has the source URL's credentials
// removed, keeping the cause's chain for errors.Is and errors.As.
type sanitized struct {
	text string
	err  error
}

func (s *sanitized) Error() string { return s.text }

func (s *sanitized) Unwrap() error { return s.err }

// Sanitize keeps credentials in rawURL out of err's text; errors.Is and
// errors.As still see err.
func Sanitize(err error, rawURL string) error {
	s := err.Error()
	if rawURL != "" {
		s = strings.ReplaceAll(s, rawURL, forge.SanitizeURL(rawURL))
	}
	return &sanitized{text: s, err: err}
}
