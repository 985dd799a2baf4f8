// Package reconciler owns the GitOps loop: triggers (polling, webhooks,
// manual, fsnotify on local repositories) feeding one task queue, the
// reconcile of a commit in phases (fetch, load, plan only the sites that
// changed, store plans, report), the commit signature policy, drift
// repair, pull-request previews, and the commit statuses that report it
// all back to the forge. The git side (mirrors, fetch, the tree fs.FS,
// watching) is the source package's.
//
// Safety rules it keeps: an invalid commit changes nothing and the last
// valid commit stays desired; an unreachable source or a tree without
// manifests is an error, never "desired = empty"; a prune refused by the
// planner stores nothing for that site; a site whose new plan is empty or
// refused gets its older active plan cancelled, so a change reverted (or
// refused) before it ran never runs; one replica reconciles a repository
// at a time (store lease).
package reconciler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/localsource"
	"github.com/nkudo/nkudo/source"
	"github.com/nkudo/nkudo/store"
)

// Options configures a Reconciler. Store and DataDir are required; zero
// values of the rest pick the documented defaults.
type Options struct {
	Store store.Store
	// DataDir holds the git mirrors (DataDir/git) and notes repositories
	// (DataDir/notes).
	DataDir string
	Logger  *slog.Logger
	// AllowInsecureCredentials lets credentials travel over plain http
	// (local development); by default they go over https or ssh only.
	// CredentialsRef and ForgeCredentialsRef are resolved through Store by
	// the repository's tenant at every use.
	AllowInsecureCredentials bool
	// PublicURL is the control plane's address, for status target URLs.
	PublicURL string
	// Holder names this replica in leases (default: hostname + random).
	Holder string
	// Workers is how many repositories reconcile at once (default 2);
	// see TenantWorkers.
	Workers int
	// PollInterval is how often every repository is fetched, webhooks or
	// not (default 1m, jittered ±10%); negative disables polling.
	PollInterval time.Duration
	// ApplyCheckInterval is how often pending nkudo/apply statuses are
	// re-evaluated (default 5s).
	ApplyCheckInterval time.Duration
	// OfflineTimeout fails nkudo/apply when a site with a plan has not
	// heartbeated for this long (default 15m).
	OfflineTimeout time.Duration
	// DriftInterval is the smallest gap between two drift re-plans of one
	// site (default 10s); inventory changes in between are merged.
	DriftInterval time.Duration
	// PruneLimit is handed to the planner (zero: the default rule).
	PruneLimit diff.PruneLimit
	// StatusPrefix goes before every status context ("" = none).
	StatusPrefix string
	// Writers builds the status writers of a repository (nil: from the
	// repository's forge settings).
	Writers func(ctx context.Context, repo store.Repository) ([]forge.Writer, error)
	// Reporter tunes retries of status posting (Prefix and Logger are set here).
	Reporter forge.ReporterOptions
	// WatchLocal watches local repositories with fsnotify and reconciles on
	// a commit (development).
	WatchLocal bool
	// LeaseTTL is how long a repository lease lasts (default 2m).
	LeaseTTL time.Duration
	// TenantWorkers is how many tasks of one tenant run at once (default
	// 1): the queue takes tenants in turn, so one tenant's slow repository
	// never holds every worker.
	TenantWorkers int
	// QueueSize bounds the tasks waiting for a worker (default
	// DefaultQueueSize). Webhooks, polls, manual triggers and drift all
	// queue there, coalescing per repository (previews per pull request),
	// so the bound is reached only with that many distinct repositories or
	// pull requests waiting; beyond it a new task is refused (a webhook
	// delivery dropped with a log line, a poll or drift check tried at the
	// next tick, a manual trigger answered "not queued").
	QueueSize int
	// MaxMirrorBytes bounds a repository's git mirror on disk, checked
	// after every fetch (default DefaultMaxMirrorBytes; negative: no limit).
	MaxMirrorBytes int64
	// LoadTimeout bounds loading the manifests of one commit (default
	// DefaultLoadTimeout).
	LoadTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// RefreshInterval is the smallest gap between two re-previews of one
	// open pull request after a site's inventory or the branch moved
	// (default DefaultRefreshInterval; negative: never re-previewed).
	RefreshInterval time.Duration

	// AllowLocalSources permits sources and git-notes targets on this
	// machine (a path or file:// URL); false refuses them at every fetch.
	// Even when true, nothing inside DataDir or ProtectedDirs is a valid
	// source.
	AllowLocalSources bool
	// ProtectedDirs are more directories that are never a source (a
	// credentials directory or PKI files kept outside DataDir).
	ProtectedDirs []string
	// Egress is the policy on every address dialled for git over HTTP(S)
	// and SSH and for forge status APIs. The zero value refuses loopback,
	// link-local, private, unspecified and multicast addresses. Fetches
	// over HTTP(S) also need egress.InstallGit to have run (in main).
	Egress egress.Policy
	// GitFetchMaxBytes caps what one git fetch over HTTP(S) may read
	// (0: egress.DefaultGitMaxBytes).
	GitFetchMaxBytes int64
	// Metrics receives the loop's series (nkudo_reconcile_errors_total);
	// nil: not exported.
	Metrics prometheus.Registerer
}

// Reconciler runs the GitOps loop. It implements the control plane's
// Reconciler hook and the webhook Sink; the desired state it plans is
// recorded in the store, where the API reads it.
type Reconciler struct {
	opts  Options
	log   *slog.Logger
	store store.Store
	now   func() time.Time
	actor store.Actor

	mirrors *source.Mirrors // the git mirrors, one per repository

	// Each concern below is a small type with its own lock.
	cache     *loadCache      // the last few loaded trees
	loaders   loaders         // per repository: the files of the last load, reused by the next
	drift     *driftDebouncer // sites whose inventory moved, and which repository plans each
	tracker   applyTracker    // commits whose nkudo/apply is being followed
	reporters reporterSet     // status and comment reporters per repository
	polls     pollSchedule    // when each repository is polled next
	closed    closedPRs       // pull requests whose plan comment says closed: not edited again

	queue *taskQueue // tasks waiting for a worker, fair across tenants

	done taskCounters // tasks the workers finished, for TaskCounts

	git   *egress.Git        // egress policy and byte cap of git fetches
	local localsource.Policy // which local paths may be sources

	failed reconcileErrors // failed reconciles, for Prometheus

	labels prLabels // pull-request labels from webhook payloads
	fresh  *prFresh // re-previews of open pull requests
}

// DefaultQueueSize is Options.QueueSize's default.
const DefaultQueueSize = 4096

// ErrQueueFull is returned by Preview when the task queue is full (see
// Options.QueueSize).
var ErrQueueFull = errors.New("reconcile queue full")

type taskCounters struct {
	reconcile, preview, drift, suspended atomic.Int64
}

// TaskCounts says how many queued tasks the workers have finished, by
// kind, whatever their outcome. Suspended counts the reconcile and drift
// tasks that did nothing because their repository is suspended (they are
// counted under their kind too). It lets a caller (a test, a debug
// endpoint) see that the loop has looked at something, rather than
// waiting and hoping.
type TaskCounts struct {
	Reconcile, Preview, Drift, Suspended int64
}

// TaskCounts returns the counts so far.
func (r *Reconciler) TaskCounts() TaskCounts {
	return TaskCounts{
		Reconcile: r.done.reconcile.Load(),
		Preview:   r.done.preview.Load(),
		Drift:     r.done.drift.Load(),
		Suspended: r.done.suspended.Load(),
	}
}

type taskKind string

const (
	taskReconcile taskKind = "reconcile"
	taskPreview   taskKind = "preview"
	taskDrift     taskKind = "drift"
)

type task struct {
	kind   taskKind
	tenant string
	repoID string
	ref    string
	pr     int
	sha    string
	sites  map[string]bool
	// refresh marks a re-preview of an unchanged head (prfresh.go).
	refresh bool

	// trigger says what queued a reconcile, for its log line: "poll", or
	// "request" (a webhook, the API, or another replica's notice).
	trigger string
}

// New returns a Reconciler; call Run to start it.
func New(o Options) (*Reconciler, error) {
	if o.Store == nil || o.DataDir == "" {
		return nil, errors.New("reconciler: Store and DataDir are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Holder == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		o.Holder = host + "-" + hex.EncodeToString(b)
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.PollInterval == 0 {
		o.PollInterval = time.Minute
	}
	if o.ApplyCheckInterval <= 0 {
		o.ApplyCheckInterval = 5 * time.Second
	}
	if o.OfflineTimeout <= 0 {
		o.OfflineTimeout = 15 * time.Minute
	}
	if o.DriftInterval <= 0 {
		o.DriftInterval = 10 * time.Second
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 2 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.TenantWorkers <= 0 {
		o.TenantWorkers = 1
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.MaxMirrorBytes == 0 {
		o.MaxMirrorBytes = DefaultMaxMirrorBytes
	}
	if o.LoadTimeout <= 0 {
		o.LoadTimeout = DefaultLoadTimeout
	}
	if o.RefreshInterval == 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	errs, err := newReconcileErrors(o.Metrics)
	if err != nil {
		return nil, err
	}
	gitEgress := egress.NewGit(o.Egress, o.GitFetchMaxBytes)
	local := localsource.Policy{Allow: o.AllowLocalSources, Protected: protectedDirs(o)}
	return &Reconciler{
		failed:  errs,
		git:     gitEgress,
		local:   local,
		mirrors: source.New(source.Options{DataDir: o.DataDir, Git: gitEgress, Local: local, MaxMirrorBytes: o.MaxMirrorBytes, Logger: o.Logger.With("component", "reconciler")}),
		opts:    o,
		log:     o.Logger.With("component", "reconciler"),
		store:   o.Store,
		now:     o.Now,
		actor:   store.Actor{Kind: store.ActorSystem, ID: "reconciler"},
		queue:   newTaskQueue(o.TenantWorkers, o.QueueSize),
		cache:   newLoadCache(8),
		drift:   newDriftDebouncer(o.DriftInterval),
		fresh:   newPRFresh(o.RefreshInterval),
	}, nil
}

// Run works until ctx ends: workers, polling, drift and apply tracking.
func (r *Reconciler) Run(ctx context.Context) error {
	r.reporters.setRunContext(ctx)
	r.resume(ctx)
	var wg sync.WaitGroup
	for range r.opts.Workers {
		wg.Go(func() { r.worker(ctx) })
	}
	wg.Go(func() { r.pollLoop(ctx) })
	wg.Go(func() { r.driftLoop(ctx) })
	wg.Go(func() { r.applyLoop(ctx) })
	wg.Go(func() { r.refreshLoop(ctx) })
	if r.opts.WatchLocal {
		wg.Go(func() { r.watchLoop(ctx) })
	}
	wg.Wait()
	r.Close()
	return nil
}

// Close stops the status reporters and waits for them (a status not yet
// posted stays unposted in the store and is posted after the next start).
// Run calls it on the way out; callers of Reconcile without Run call it
// themselves.
func (r *Reconciler) Close() {
	// A git push that ignores its cancelled context must not hold up
	// shutdown; the status stays unposted and is posted after a restart.
	if !r.reporters.stop(10 * time.Second) {
		r.log.Warn("status reporters did not stop within 10s")
	}
}

// Trigger queues a reconcile of the repository at ref ("" = its branch
// head; a branch name; or a commit hash). It implements the control
// plane's Reconciler hook and the webhook Sink, and returns at once;
// Queued is false when the repository is suspended or the queue is full.
func (r *Reconciler) Trigger(ctx context.Context, tenant, repoID, ref string) (api.TriggerResult, error) {
	repo, err := r.store.GetRepository(ctx, tenant, repoID)
	if err != nil {
		return api.TriggerResult{}, fmt.Errorf("trigger %s: %w", repoID, err)
	}
	res := api.TriggerResult{RepoID: repo.ID, Ref: ref}
	if repo.Suspended {
		res.Message = "repository is suspended: nothing is reconciled until it is resumed"
		return res, nil
	}
	r.recordRequest(ctx, tenant, repo.ID)
	if !r.enqueue(&task{kind: taskReconcile, tenant: tenant, repoID: repo.ID, ref: ref, trigger: "request"}) {
		r.log.Warn("reconcile queue full, trigger dropped (polling will catch up)", "tenant", tenant, "repo", repo.ID, "waiting", r.queue.waiting())
		res.Message = "the reconcile queue is full: not queued; the next poll reconciles the repository"
		return res, nil
	}
	res.Queued = true
	res.Message = "reconcile queued"
	return res, nil
}

// Preview queues a pull-request preview (validate and plan the head;
// nothing is stored as a plan or applied). It returns at once; ErrQueueFull
// when the queue is full.
func (r *Reconciler) Preview(ctx context.Context, tenant, repoID string, pr int, headSHA string) error {
	if _, err := r.store.GetRepository(ctx, tenant, repoID); err != nil {
		return fmt.Errorf("preview %s#%d: %w", repoID, pr, err)
	}
	r.closed.reopen(prKey(repoID, pr)) // reopened: its comment shows plans again
	r.reopenPreview(ctx, tenant, repoID, pr)
	if !r.enqueue(&task{kind: taskPreview, tenant: tenant, repoID: repoID, pr: pr, sha: headSHA}) {
		return fmt.Errorf("preview %s#%d: %w (%d tasks waiting)", repoID, pr, ErrQueueFull, r.queue.waiting())
	}
	return nil
}

// InventoryChanged notes that a site's VM inventory moved; the drift loop
// re-plans it (at most once per DriftInterval). It never blocks.
func (r *Reconciler) InventoryChanged(_ context.Context, tenant, site string) {
	r.markDirty(tenant, site)
	r.fresh.siteMoved(tenant, site)
}

// markDirty queues a drift check of a site (rate-limited by the drift loop).
func (r *Reconciler) markDirty(tenant, site string) { r.drift.mark(tenant, site) }

// enqueue puts t in the one task queue; false when the queue refused it.
func (r *Reconciler) enqueue(t *task) bool { return r.queue.push(t) }

func (r *Reconciler) worker(ctx context.Context) {
	for {
		t := r.queue.pop()
		if t == nil {
			select {
			case <-ctx.Done():
				return
			case <-r.queue.wake:
				continue
			}
		}
		err := r.runTask(ctx, t)
		r.queue.done(t)
		switch t.kind {
		case taskReconcile:
			r.done.reconcile.Add(1)
		case taskPreview:
			r.done.preview.Add(1)
		case taskDrift:
			r.done.drift.Add(1)
		}
		// The level comes from the failure's reason: an invalid commit is
		// the repository's content (the commit status says so), a fetch
		// that may pass next time a warning, the control plane's own
		// failure an error.
		if e := asError(ctx, err); e != nil {
			r.log.Log(ctx, e.LogLevel(), "reconcile task failed", "kind", t.kind, "tenant", t.tenant, "repo", t.repoID, "reason", e.Reason, "retry", e.Retry, "err", err)
		}
	}
}

func (r *Reconciler) runTask(ctx context.Context, t *task) error {
	repo, err := r.store.GetRepository(ctx, t.tenant, t.repoID)
	if err != nil {
		return fmt.Errorf("load repository: %w", err)
	}
	switch t.kind {
	case taskReconcile:
		if repo.Suspended {
			r.done.suspended.Add(1)
			return nil
		}
		if r.adoptedDone(ctx, t) {
			return nil
		}
		t0 := time.Now()
		var res Result
		if res, err = r.Reconcile(ctx, repo, t.ref); err == nil && !res.Skipped {
			actions := 0
			for _, p := range res.Stored {
				actions += len(p.Actions)
			}
			r.log.Info("reconciled", "tenant", repo.Tenant, "repo", repo.Name, "commit", res.Commit, "trigger", t.trigger,
				"sitesPlanned", len(res.Planned), "actions", actions, "summary", res.Summary, "duration", time.Since(t0).Round(time.Millisecond))
		}
	case taskPreview:
		if t.refresh && r.refreshStale(ctx, t) {
			return nil // a newer head was previewed, or the PR closed
		}
		_, err = r.PreviewNow(ctx, repo, t.pr, t.sha)
	case taskDrift:
		if repo.Suspended {
			r.done.suspended.Add(1)
			return nil
		}
		sites := make([]string, 0, len(t.sites))
		for s := range t.sites {
			sites = append(sites, s)
		}
		err = r.repairDrift(ctx, repo, sites)
	}
	return err
}

// resume picks up after a restart: statuses the forge never got, and
// apply statuses still pending.
func (r *Reconciler) resume(ctx context.Context) {
	repos, err := r.store.ListAllRepositories(ctx)
	if err != nil {
		r.log.Error("resume: list repositories", "err", err)
		return
	}
	r.adoptPending(ctx)
	unposted, err := r.store.UnpostedCommitStatuses(ctx, 1000)
	if err != nil {
		r.log.Error("resume: unposted statuses", "err", err)
		return
	}
	byID := map[string]store.Repository{}
	for _, repo := range repos {
		byID[repo.ID] = repo
	}
	for _, st := range unposted {
		if repo, ok := byID[st.RepoID]; ok {
			r.report(ctx, repo, st)
		}
	}
}

// protectedDirs are the directories no local source may name: the data
// dir (mirrors, notes, the SQLite database, the dev PKI, the default secret
// key) and what the operator adds.
func protectedDirs(o Options) []string {
	return append([]string{o.DataDir}, o.ProtectedDirs...)
}
