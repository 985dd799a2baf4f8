package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/nbsync"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/store"
)

// GitOpsFlags tune the GitOps loop that `serve` runs beside the API.
type GitOpsFlags struct {
	PollInterval string `help:"How often every repository is fetched, webhooks or not (Go duration; negative disables polling)." default:"1m" env:"NKUDO_POLL_INTERVAL"`
	WatchLocal   bool   `help:"Watch local (file://) repositories and reconcile on every commit (development)." env:"NKUDO_WATCH_LOCAL"`
	// StatusPrefix keeps several control planes (or installations) posting
	// to one forge from overwriting each other's statuses.
	StatusPrefix string `help:"Prefix of every commit status context (\"eu/\" posts eu/nkudo/plan); empty for none." env:"NKUDO_STATUS_PREFIX" placeholder:"PREFIX"`
	// OfflineTimeout is when nkudo/apply gives up on a silent site.
	OfflineTimeout time.Duration `name:"site-offline-timeout" help:"A site with a plan that has not heartbeated for this long fails nkudo/apply." default:"15m" env:"NKUDO_SITE_OFFLINE_TIMEOUT"`
	// PreviewRefresh bounds how often an open pull request is previewed
	// again because a site's inventory or the branch moved.
	PreviewRefresh time.Duration `name:"preview-refresh-interval" help:"Smallest gap between two re-previews of one open pull request after a site's inventory or the branch moved (negative: never)." default:"1m" env:"NKUDO_PREVIEW_REFRESH_INTERVAL"`

	// Tenants are hostile: by default they can name neither a path on this
	// machine nor an internal address (see internal/egress).
	AllowLocalSources bool     `help:"Accept repositories that are paths on this machine (file://), for development and demos; the data dir is refused even then." env:"NKUDO_ALLOW_LOCAL_SOURCES"`
	EgressAllow       []string `help:"CIDR that git fetches and forge API calls may dial although the egress policy refuses it by default (loopback, link-local, private, unspecified, multicast); repeatable." env:"NKUDO_EGRESS_ALLOW" placeholder:"CIDR"`
	GitFetchMaxBytes  int64    `help:"Bytes one git fetch over HTTP(S) may read; a fetch over it fails." default:"268435456" env:"NKUDO_GIT_FETCH_MAX_BYTES"`
	// protected are directories no source may name beyond the data dir
	// (persistent PKI files), set by serve.
	protected []string
	// AllowInsecureCredentials exists for local forges without TLS.
	AllowInsecureCredentials bool `help:"Let credentials travel over plain http:// to the host they are bound to (local development only; by default https or ssh)." env:"NKUDO_ALLOW_INSECURE_CREDENTIALS"`
	// TenantWorkers keeps one tenant's slow repositories from holding
	// every reconcile worker.
	TenantWorkers int `help:"How many reconcile tasks of one tenant run at once; tenants are served in turn." default:"1" env:"NKUDO_TENANT_WORKERS"`
	// MaxMirrorSize bounds the disk one repository's git mirror may take.
	MaxMirrorSize string `help:"Largest git mirror of one repository on disk, checked after every fetch (bytes, or with KiB, MiB, GiB; -1 for no limit)." default:"1GiB" env:"NKUDO_MAX_MIRROR_SIZE" placeholder:"SIZE"`
	// LoadTimeout bounds loading and validating the manifests of one commit.
	LoadTimeout time.Duration `help:"Longest time loading the manifests of one commit may take." default:"30s" env:"NKUDO_LOAD_TIMEOUT"`
	// LeaseTTL bounds how long the work of a replica that died stays
	// stuck: another replica takes its repositories over once it lapses.
	LeaseTTL time.Duration `name:"lease-ttl" help:"How long a replica's repository lease lasts without renewal (renewed every third of it); a dead replica's work is taken over when it lapses." default:"2m" env:"NKUDO_LEASE_TTL"`
}

// parseSize reads a byte count with an optional KiB, MiB or GiB suffix;
// a negative count stands for no limit, "" for the default (0).
func parseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	if num == "" {
		return 0, nil
	}
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n == 0 || (n > 0 && n > math.MaxInt64/mult) {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, KiB, MiB or GiB (or -1 for no limit)", s)
	}
	if n < 0 {
		return -1, nil
	}
	return n * mult, nil
}

// wireGitOps attaches the GitOps loop (reconciler, webhooks, desired state)
// to the server options and starts it; the returned stop function ends the
// loop and waits for it, before the store is closed.
func wireGitOps(ctx context.Context, st store.Store, log *slog.Logger, dataDir, publicURL string, f GitOpsFlags, opts *controlplane.Options) (stop func(), err error) {
	poll, err := parseDuration(f.PollInterval)
	if err != nil {
		return nil, fmt.Errorf("--poll-interval: %w", err)
	}
	// Zero values (a ServeCmd built in code) take the loop's defaults.
	if f.TenantWorkers < 0 {
		return nil, fmt.Errorf("--tenant-workers: %d: want at least 1", f.TenantWorkers)
	}
	maxMirror, err := parseSize(f.MaxMirrorSize)
	if err != nil {
		return nil, fmt.Errorf("--max-mirror-size: %w", err)
	}
	if f.LoadTimeout < 0 {
		return nil, fmt.Errorf("--load-timeout: %s: want a positive duration", f.LoadTimeout)
	}
	// Renewed every third of it: below a second a slow database call
	// would lose a live replica its lease.
	if f.LeaseTTL != 0 && f.LeaseTTL < time.Second {
		return nil, fmt.Errorf("--lease-ttl: %s: want at least 1s", f.LeaseTTL)
	}
	allow, err := egress.ParseAllow(f.EgressAllow)
	if err != nil {
		return nil, fmt.Errorf("--egress-allow: %w", err)
	}
	if f.GitFetchMaxBytes < 0 {
		return nil, fmt.Errorf("--git-fetch-max-bytes %d: must be positive (0: the default)", f.GitFetchMaxBytes)
	}
	protected := append([]string{dataDir}, f.protected...)
	opts.AllowLocalSources, opts.ProtectedDirs = f.AllowLocalSources, protected
	// The loop's series are served with the server's, from one registry.
	if opts.Registry == nil {
		if opts.Registry, err = controlplane.NewRegistry(); err != nil {
			return nil, err
		}
	}
	loop, err := reconciler.NewLoop(reconciler.Options{
		// The loop's packages name their own component in every line.
		Store: st, DataDir: dataDir, Logger: log,
		PublicURL: publicURL, PollInterval: poll, WatchLocal: f.WatchLocal,
		StatusPrefix: f.StatusPrefix, OfflineTimeout: f.OfflineTimeout,
		AllowInsecureCredentials: f.AllowInsecureCredentials,
		TenantWorkers:            f.TenantWorkers, MaxMirrorBytes: maxMirror, LoadTimeout: f.LoadTimeout,
		AllowLocalSources: f.AllowLocalSources, ProtectedDirs: protected,
		Egress: egress.Policy{Allow: allow}, GitFetchMaxBytes: f.GitFetchMaxBytes,
		Metrics: opts.Registry, RefreshInterval: f.PreviewRefresh,
		LeaseTTL: f.LeaseTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("start GitOps loop: %w", err)
	}
	opts.Reconciler, opts.Webhooks = loop, loop.Webhooks
	opts.AllowInsecureCredentials = f.AllowInsecureCredentials
	// NetBird management APIs are tenant-chosen addresses like forges.
	opts.NetBirdEgress = egress.Policy{Allow: allow}
	// NetBird membership follows the Sites the loop planned (the desired state in the store), beside it.
	nbs := nbsync.New(nbsync.Options{Store: st, Logger: log,
		HTTP: opts.NetBirdEgress.HTTPClient(30 * time.Second), AllowInsecureCredentials: f.AllowInsecureCredentials})
	lctx, cancel := context.WithCancel(ctx)
	done, nbDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		if err := loop.Run(lctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("GitOps loop stopped", "err", err)
		}
	}()
	go func() { defer close(nbDone); nbs.Run(lctx) }()
	return func() { cancel(); <-done; <-nbDone }, nil
}

// pkiDirs are the directories of the persistent PKI files, which no
// repository may name as a source.
func (f PKIFlags) pkiDirs() []string {
	var dirs []string
	for _, p := range []string{f.CACertFile, f.CAKeyFile, f.ServerCertFile, f.ServerKeyFile} {
		if p != "" {
			dirs = append(dirs, filepath.Dir(p))
		}
	}
	return dirs
}
