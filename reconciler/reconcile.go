package reconciler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/schema"
	"github.com/nkudo/nkudo/store"
)

// Result says what one reconcile of a commit did.
type Result struct {
	Commit string
	// Valid is false when the commit failed validation (nothing changed).
	Valid bool
	// Planned lists the sites that were re-planned (the incremental set).
	Planned []string
	// Stored is the plans stored (new or re-activated).
	Stored []model.Plan
	// Refused maps a site to the prune-safety reason its plan was refused.
	Refused map[string]string
	// Cancelled maps a site to the ID of its older active plan that this
	// commit superseded without a new plan: the site needs nothing (the
	// older plan's change was reverted before it ran), or its plan was
	// refused. Nothing the older commit wanted runs there any more.
	Cancelled map[string]string
	// Summary is the nkudo/plan description.
	Summary string
	// Unregistered lists sites in git that the control plane does not know
	// yet (no plan can be stored for them).
	Unregistered []string
	// IncrementalLoad is true when the manifest files unchanged since the
	// repository's previous load were not parsed again (schema re-checks
	// the set over all of them).
	IncrementalLoad bool
	// Fetch, Load and Plan are how long each phase took.
	Fetch, Load, Plan time.Duration
	// Skipped is true when another replica holds the repository's lease.
	Skipped bool
}

// ErrInvalidCommit is wrapped by Reconcile's error when the commit fails
// validation; the error also wraps schema.Errors. The error is an *Error
// (ReasonInvalid).
var ErrInvalidCommit = errors.New("invalid commit")

func leaseName(repoID string) string { return "reconcile/" + repoID }

// lease takes the repository's lease and keeps renewing it while the work
// runs; the returned context ends if the lease is lost, so a replica never
// goes on reconciling a repository another one has taken over. ok is false
// when another replica holds it.
func (r *Reconciler) lease(ctx context.Context, repoID string) (context.Context, func(), bool, error) {
	name := leaseName(repoID)
	ok, err := r.store.AcquireLease(ctx, name, r.opts.Holder, r.opts.LeaseTTL)
	if err != nil {
		return ctx, nil, false, fmt.Errorf("lease %s: %w", repoID, err)
	}
	if !ok {
		return ctx, nil, false, nil
	}
	lctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(r.opts.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-lctx.Done():
				return
			case <-t.C:
				if ok, err := r.store.RenewLease(lctx, name, r.opts.Holder, r.opts.LeaseTTL); err == nil && !ok {
					cancel(fmt.Errorf("lease %s lost to another replica", repoID))
					return
				}
			}
		}
	}()
	release := func() {
		close(done)
		cancel(nil)
		if err := r.store.ReleaseLease(context.WithoutCancel(ctx), name, r.opts.Holder); err != nil {
			r.log.Warn("release lease", "repo", repoID, "err", err)
		}
	}
	return lctx, release, true, nil
}

func isSHA(s string) bool {
	if len(s) != 40 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Reconcile fetches the repository, resolves ref ("" = its branch head),
// validates the commit and plans the sites whose desired state or
// inventory changed. It is what a trigger runs; tests and benchmarks call
// it directly. A failure is an *Error, from which the commit's status, the
// repository's lastError and the metric were derived.
func (r *Reconciler) Reconcile(ctx context.Context, repo store.Repository, ref string) (_ Result, rerr error) {
	ctx, release, ok, err := r.lease(ctx, repo.ID)
	if err != nil {
		e := asError(ctx, err)
		r.failed.count(ctx, repo.Tenant, e)
		return Result{}, e
	}
	if !ok {
		return Result{Skipped: true}, nil
	}
	defer release()
	// Every failure counts, the store's included (before release ends the
	// lease's context, so that a reconcile cut short by shutdown or by a
	// lease lost to another replica does not).
	defer func() { r.failed.count(ctx, repo.Tenant, rerr) }()
	// The commit the failure's status goes on: known before the fetch only
	// when ref names it.
	var commit string
	if isSHA(ref) {
		commit = ref
	}
	defer func() { rerr = r.fail(ctx, repo, commit, rerr) }()

	t0 := time.Now()
	head, err := r.fetch(ctx, repo, ref)
	if err != nil {
		return Result{}, fetchError(err)
	}
	commit = head.String()
	res := Result{Commit: commit, Fetch: time.Since(t0)}
	if err := r.store.MarkCommitSeen(ctx, repo.Tenant, repo.ID, commit, r.now()); err != nil {
		return res, fmt.Errorf("mark commit seen: %w", err)
	}
	if err := r.checkSignature(ctx, repo, head); err != nil {
		return res, err
	}
	t1 := time.Now()
	l, err := r.load(ctx, repo, head)
	res.Load = time.Since(t1)
	if l != nil {
		res.IncrementalLoad = l.incremental
	}
	if err != nil {
		return res, loadError(commit, repo.Path, err)
	}
	res.Valid = true
	// A commit already reconciled keeps the statuses it got then (a poll
	// must not turn "3 sites: 3 create" into "no changes"); only sites whose
	// inventory moved are looked at again, quietly, as drift.
	again := repo.LastAppliedCommit == commit
	if !again {
		r.setStatus(ctx, repo, commit, forge.ContextValidate, store.StateSuccess,
			fmt.Sprintf("valid: %d sites, %d VMs", len(l.desired.Sites), len(l.desired.VMs)))
	}

	t2 := time.Now()
	err = r.planSites(ctx, repo, commit, l, nil, !again, &res)
	res.Plan = time.Since(t2)
	if err != nil {
		return res, err
	}
	if err := r.store.MarkCommitApplied(ctx, r.actor, repo.Tenant, repo.ID, commit, r.now()); err != nil {
		return res, fmt.Errorf("mark commit applied: %w", err)
	}
	return res, nil
}

func pathOrRoot(p string) string {
	if strings.Trim(p, "/.") == "" {
		return "the repository root"
	}
	return p
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// invalidDescription lists the first errors (file:line) for a status.
func invalidDescription(es schema.Errors) string {
	var parts []string
	for i, e := range es {
		if i == 3 {
			break
		}
		parts = append(parts, e.Error())
	}
	s := fmt.Sprintf("%d errors: ", len(es))
	if len(es) == 1 {
		s = "1 error: "
	}
	return s + strings.Join(parts, "; ")
}

// fail turns a reconcile's error into an *Error and reports it: the
// commit's status (when the commit is known and the reason posts one) and
// the repository's lastError, both derived from that one value.
func (r *Reconciler) fail(ctx context.Context, repo store.Repository, commit string, err error) error {
	e := asError(ctx, err)
	if e == nil {
		return nil
	}
	if label, state, desc, ok := e.Status(); ok && commit != "" {
		r.setStatus(ctx, repo, commit, label, state, desc)
	}
	if msg, ok := e.LastError(); ok {
		if serr := r.store.SetRepositoryError(context.WithoutCancel(ctx), repo.Tenant, repo.ID, msg, r.now()); serr != nil {
			r.log.Error("record repository error", "repo", repo.ID, "err", serr)
		}
	}
	return e
}

// fetch resolves ref to a commit in the mirror, fetching what is missing.
func (r *Reconciler) fetch(ctx context.Context, repo store.Repository, ref string) (plumbing.Hash, error) {
	if isSHA(ref) {
		return plumbing.NewHash(ref), r.fetchSHA(ctx, repo, ref, 0)
	}
	auth, err := r.auth(ctx, repo.Tenant, repo.URL, repo.CredentialsRef)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("credentials for %s: %w", repo.ID, err)
	}
	m, err := r.mirrorFor(repo.ID, repo.URL)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	branch := repo.Branch
	if ref != "" {
		branch = strings.TrimPrefix(ref, "refs/heads/")
	}
	h, _, err := m.fetchBranch(ctx, auth, branch)
	if err != nil {
		return h, err
	}
	return h, r.checkMirror(repo.ID, m)
}

// fetchSHA brings commit sha into the mirror (pr > 0: from the pull
// request's head ref too, when no branch has it). A reconcile of a commit
// and a preview of it fetch alike, so they fail alike.
func (r *Reconciler) fetchSHA(ctx context.Context, repo store.Repository, sha string, pr int) error {
	auth, err := r.auth(ctx, repo.Tenant, repo.URL, repo.CredentialsRef)
	if err != nil {
		return fmt.Errorf("credentials for %s: %w", repo.ID, err)
	}
	m, err := r.mirrorFor(repo.ID, repo.URL)
	if err != nil {
		return err
	}
	if err := m.fetchCommit(ctx, auth, sha, pr); err != nil {
		return err
	}
	return r.checkMirror(repo.ID, m)
}

// loaded is the validated desired state of one tree, with per-site hashes.
type loaded struct {
	desired model.Desired
	err     error
	tree    string
	// incremental is true when files unchanged since the repository's
	// previous load were not parsed again.
	incremental bool
	once        sync.Once
	hashes      map[string]string   // site → hash of its desired state
	docs        map[string]*siteDoc // site → its documents, as hashed
	// blobs (manifest path → blob hash) and hashCache, when set, let
	// siteHashes reuse the previous load's hashes of unchanged sites.
	blobs     map[string]string
	hashCache *siteHashCache
	rehashed  int // sites encoded and hashed by siteHashes (not reused)
}

// siteDoc is one site's desired state: what is hashed, and what the store
// keeps for the site.
type siteDoc struct {
	Site *model.Site            `json:"site"`
	VMs  []model.VirtualMachine `json:"vms"`
}

// siteDesired is site's record as planned at commit against inventory
// version inv (documents empty for a site gone from git).
func (l *loaded) siteDesired(site, commit string, inv int64, now time.Time) store.SiteDesired {
	d := store.SiteDesired{Site: site, Hash: l.siteHashes()[site], InventoryVersion: inv, Commit: commit, UpdatedAt: now}
	if doc := l.docs[site]; doc != nil {
		d.Document, d.VMs = doc.Site, doc.VMs
	}
	return d
}

// siteHashes hashes each site's manifest and VMs (positions left out: moving
// a VM between files changes nothing at the edge). A site whose files are
// the same blobs as at the previous load keeps its hash and documents from
// then; only the others are encoded and hashed.
func (l *loaded) siteHashes() map[string]string {
	l.once.Do(func() {
		// Group by site first, by index: a cached site's documents are
		// neither copied nor encoded.
		type group struct {
			site  int // index in desired.Sites, -1 for none
			vms   []int
			files []string
		}
		groups := map[string]*group{}
		get := func(n string) *group {
			g, ok := groups[n]
			if !ok {
				g = &group{site: -1}
				groups[n] = g
			}
			return g
		}
		for i := range l.desired.Sites {
			s := &l.desired.Sites[i]
			g := get(s.Name)
			g.site = i
			g.files = append(g.files, s.Source.File)
		}
		for i := range l.desired.VMs {
			vm := &l.desired.VMs[i]
			g := get(vm.Site)
			g.vms = append(g.vms, i)
			if n := len(g.files); n == 0 || g.files[n-1] != vm.Source.File {
				g.files = append(g.files, vm.Source.File)
			}
		}
		l.hashes = make(map[string]string, len(groups))
		l.docs = make(map[string]*siteDoc, len(groups))
		var next map[string]siteHashEntry
		if l.hashCache != nil && l.blobs != nil {
			next = make(map[string]siteHashEntry, len(groups))
		}
		for n, g := range groups {
			key := ""
			if next != nil {
				key = siteFilesKey(g.files, l.blobs)
			}
			if key != "" {
				if e, ok := l.hashCache.get(n, key); ok {
					l.hashes[n], l.docs[n] = e.hash, e.doc
					next[n] = e
					continue
				}
			}
			d := &siteDoc{}
			if g.site >= 0 {
				s := l.desired.Sites[g.site]
				s.Source = model.Source{}
				d.Site = &s
			}
			for _, i := range g.vms {
				vm := l.desired.VMs[i]
				vm.Source = model.Source{}
				d.VMs = append(d.VMs, vm)
			}
			sort.Slice(d.VMs, func(i, j int) bool { return d.VMs[i].Name < d.VMs[j].Name })
			b, _ := json.Marshal(d)
			sum := sha256.Sum256(b)
			h := hex.EncodeToString(sum[:16])
			l.hashes[n], l.docs[n] = h, d
			l.rehashed++
			if key != "" {
				next[n] = siteHashEntry{key: key, hash: h, doc: d}
			}
		}
		if next != nil {
			l.hashCache.replace(next)
		}
	})
	return l.hashes
}

// loadCache remembers the last few loaded trees: polling an unchanged
// branch, or a commit that only touched files outside the manifests path,
// costs no parsing.
type loadCache struct {
	mu    sync.Mutex
	max   int
	order []string
	m     map[string]*loaded
}

func newLoadCache(n int) *loadCache { return &loadCache{max: n, m: map[string]*loaded{}} }

func (c *loadCache) get(k string) *loaded {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *loadCache) put(k string, l *loaded) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok {
		c.order = append(c.order, k)
	}
	c.m[k] = l
	for len(c.order) > c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
}

// load reads and validates the manifests of commit head below repo.Path,
// within Options.LoadTimeout.
func (r *Reconciler) load(ctx context.Context, repo store.Repository, head plumbing.Hash) (*loaded, error) {
	ctx, cancel := r.loadContext(ctx)
	defer cancel()
	m, err := r.mirrorFor(repo.ID, repo.URL)
	if err != nil {
		return nil, err
	}
	fsys, err := m.commitFS(head, repo.Path)
	if err != nil {
		if errors.Is(err, ErrNoCommit) {
			return nil, err
		}
		// The manifests path does not exist in this commit: no manifests.
		return nil, fmt.Errorf("%w: %w", err, schema.ErrNoManifests)
	}
	treeHash := fsys.tree.Hash
	key := repo.ID + "/" + treeHash.String()
	if l := r.cache.get(key); l != nil {
		return l, l.err
	}
	d, stats, err := r.loaders.get(repo.ID).Load(ctx, fsys)
	l := &loaded{desired: d, err: err, tree: treeHash.String(), incremental: stats.Read < stats.Files,
		blobs: fsys.blobHashes(), hashCache: r.loaders.hashesOf(repo.ID)}
	if l.err == nil || !loadError(l.tree, repo.Path, l.err).Retry {
		r.cache.put(key, l) // a failure that may pass next time is not cached
	}
	return l, l.err
}

// planSites plans the sites of repo whose desired state (from l) or
// inventory changed since they were last planned; only restricts the
// candidates (nil = every site the repository knows). Results land in res.
func (r *Reconciler) planSites(ctx context.Context, repo store.Repository, commit string, l *loaded, only []string, report bool, res *Result) error {
	tenant := repo.Tenant
	invs, err := r.store.Inventories(ctx, tenant)
	if err != nil {
		return fmt.Errorf("read inventories: %w", err)
	}
	prev, err := r.store.SiteDesired(ctx, tenant, repo.ID)
	if err != nil {
		return fmt.Errorf("read site desired state: %w", err)
	}
	hashes := l.siteHashes()
	candidates := map[string]bool{}
	if only != nil {
		for _, s := range only {
			candidates[s] = true
		}
	} else {
		for s := range hashes {
			candidates[s] = true
		}
		for s := range prev {
			candidates[s] = true // sites gone from git: their managed VMs are pruned
		}
	}
	var toPlan, backfill []string
	for s := range candidates {
		desiredHash := hashes[s] // "" for a site gone from git
		old, had := prev[s]
		if desiredHash == "" && !had && only != nil {
			continue // drift on a site this repository never planned
		}
		sameDesired := had && old.Hash == desiredHash
		same := sameDesired && old.InventoryVersion == invs[s].Version
		// A site recorded as planned for this very commit, which is not
		// applied yet, was planned by a run that did not finish (a crash or
		// a lost lease half-way through the sites). It is planned again:
		// storing the same plan is a no-op, and the commit's nkudo/plan
		// summary and apply tracking must cover every site it planned, not
		// only those the last run reached.
		resumed := same && report && old.Commit == commit
		if same && !resumed {
			if !old.Documented {
				backfill = append(backfill, s)
			}
			continue // unchanged: the incremental rule
		}
		if !resumed && sameDesired {
			// Only the inventory moved. Leave a plan the agent is working
			// on alone (its own progress moves the inventory), and a
			// pending plan that is still fresh.
			ap, err := r.store.ActivePlan(ctx, tenant, s)
			skip := false
			switch {
			case err == nil && ap.Status == model.PlanInProgress:
				// Looked at again once the agent is done (its plan may turn
				// out stale, or the inventory may still differ).
				r.markDirty(tenant, s)
				skip = true
			case err == nil && ap.Plan.InventoryVersion >= invs[s].Version:
				skip = true
			case err != nil && !errors.Is(err, store.ErrNotFound):
				return fmt.Errorf("active plan of %s: %w", s, err)
			}
			if skip {
				if !old.Documented {
					backfill = append(backfill, s)
				}
				continue
			}
		}
		toPlan = append(toPlan, s)
	}
	// Records written before the store kept documents get them without
	// re-planning: their hash says the documents are the ones loaded now.
	// Written in batches, as plans are: one transaction per planBatch sites.
	sort.Strings(backfill)
	for from := 0; from < len(backfill); from += planBatch {
		var recs []store.SitePlanRecord
		for _, s := range backfill[from:min(from+planBatch, len(backfill))] {
			old := prev[s]
			recs = append(recs, store.SitePlanRecord{Desired: l.siteDesired(s, old.Commit, old.InventoryVersion, old.UpdatedAt)})
		}
		if _, err := r.store.RecordSitePlans(ctx, r.actor, tenant, repo.ID, recs, r.now()); err != nil {
			return fmt.Errorf("record desired state of %d sites from %s: %w", len(recs), recs[0].Desired.Site, err)
		}
	}
	sort.Strings(toPlan)
	res.Planned = toPlan
	if len(toPlan) == 0 {
		res.Summary = "no changes"
		if report {
			r.setStatus(ctx, repo, commit, forge.ContextPlan, store.StateSuccess, "no changes")
			r.trackActive(ctx, repo, commit, nil)
		}
		return nil
	}
	nbGroups, err := r.netbirdGroups(ctx, tenant, l, toPlan)
	if err != nil {
		return err
	}
	result := diff.Plan(l.desired, invs, diff.Options{Tenant: tenant, Commit: commit, Sites: toPlan, PruneLimit: r.opts.PruneLimit, NetBirdGroups: nbGroups})
	res.Summary = diff.Summary(result)
	res.Refused = map[string]string{}
	var firstRefused string
	var batch []store.SitePlanRecord
	for _, sr := range result.Sites {
		if sr.Refused != "" {
			res.Refused[sr.Site] = sr.Refused
			if firstRefused == "" {
				firstRefused = sr.Site + ": " + sr.Refused
			}
			// Nothing stored for that site; it is tried again next time.
			// An older plan still waiting there is cancelled too: it was
			// made for a desired state the repository has moved away from,
			// and a refused commit must not leave it running (it may be
			// just as destructive). The site holds still until a commit
			// is accepted.
			if err := r.cancelActive(ctx, tenant, sr.Site, commit, "plan refused: "+sr.Refused, res); err != nil {
				return err
			}
			continue
		}
		// The site's desired state is recorded with its plan, in one
		// transaction: what any replica serves as desired is what was planned.
		d := l.siteDesired(sr.Site, commit, invs[sr.Site].Version, r.now())
		var plan *model.Plan
		if len(sr.Plan.Actions) == 0 {
			// Converged: no plan is stored, and an older plan still waiting
			// for the site (a change reverted before it ran) must not run.
			if err := r.cancelActive(ctx, tenant, sr.Site, commit, "site converged: no actions needed", res); err != nil {
				return err
			}
		} else {
			plan = &sr.Plan
		}
		batch = append(batch, store.SitePlanRecord{Desired: d, Plan: plan})
		if len(batch) == planBatch {
			if err := r.recordPlans(ctx, repo, batch, res); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := r.recordPlans(ctx, repo, batch, res); err != nil {
		return err
	}
	if !report {
		return nil // drift repairs report through the plans, not commit statuses
	}
	if firstRefused != "" {
		r.setStatus(ctx, repo, commit, forge.ContextPlan, store.StateFailure, "refused: "+firstRefused)
	} else {
		desc := res.Summary
		if n := len(res.Unregistered); n > 0 {
			// Count only the sites planned; name the unregistered ones apart.
			planned := diff.Result{Sites: slices.DeleteFunc(slices.Clone(result.Sites), func(s diff.SiteResult) bool { return slices.Contains(res.Unregistered, s.Site) })}
			names, more := res.Unregistered[:min(n, 3)], ""
			if n > 3 {
				more = fmt.Sprintf(" and %d more", n-3)
			}
			desc = diff.Summary(planned) + "; not registered: " + strings.Join(names, ", ") + more
		}
		r.setStatus(ctx, repo, commit, forge.ContextPlan, store.StateSuccess, desc)
	}
	var planIDs = map[string]string{}
	for _, sr := range result.Sites {
		if sr.Refused == "" && len(sr.Plan.Actions) > 0 && !slices.Contains(res.Unregistered, sr.Site) {
			planIDs[sr.Site] = sr.Plan.ID
		}
	}
	r.trackActive(ctx, repo, commit, planIDs)
	return nil
}

// planBatch is how many sites' plans are recorded per store transaction:
// one commit for many sites (a cold commit of 1,000 sites was mostly
// per-transaction cost), small enough that a transaction holds the
// store's writer briefly.
const planBatch = 100

// recordPlans records a batch of sites' plans and desired state (as
// store.RecordSitePlans) and notes the outcome in res.
func (r *Reconciler) recordPlans(ctx context.Context, repo store.Repository, batch []store.SitePlanRecord, res *Result) error {
	if len(batch) == 0 {
		return nil
	}
	tenant := repo.Tenant
	out, err := r.store.RecordSitePlans(ctx, r.actor, tenant, repo.ID, batch, r.now())
	if err != nil {
		return fmt.Errorf("store plans for %d sites from %s: %w", len(batch), batch[0].Desired.Site, err)
	}
	for i, rec := range batch {
		site := rec.Desired.Site
		if err := out[i].Err; err != nil {
			if rec.Plan != nil && errors.Is(err, store.ErrNotFound) {
				// The site is in git but not registered with the control
				// plane yet: nothing can run there. Planned again once it is.
				res.Unregistered = append(res.Unregistered, site)
				continue
			}
			return fmt.Errorf("store plan for %s: %w", site, err)
		}
		if out[i].Stored {
			res.Stored = append(res.Stored, *rec.Plan)
		}
		r.mu.Lock()
		r.siteRepo[tenant+"/"+site] = repo.ID
		r.mu.Unlock()
	}
	return nil
}

// cancelActive supersedes the site's active plan, if it has one, without
// storing a new one, and notes it in res.
func (r *Reconciler) cancelActive(ctx context.Context, tenant, site, commit, reason string, res *Result) error {
	p, err := r.store.SupersedeActivePlan(ctx, r.actor, tenant, site, commit, reason, r.now())
	if errors.Is(err, store.ErrNotFound) {
		return nil // nothing active (or the site is not registered)
	}
	if err != nil {
		return fmt.Errorf("cancel active plan of %s: %w", site, err)
	}
	if res.Cancelled == nil {
		res.Cancelled = map[string]string{}
	}
	res.Cancelled[site] = p.Plan.ID
	r.log.Info("older plan superseded without a new one", "tenant", tenant, "site", site, "plan", p.Plan.ID,
		"planCommit", short(p.Plan.Commit), "commit", short(commit), "reason", reason)
	return nil
}

// repairDrift re-plans sites against the last valid commit.
func (r *Reconciler) repairDrift(ctx context.Context, repo store.Repository, sites []string) (rerr error) {
	if repo.LastAppliedCommit == "" {
		return nil
	}
	ctx, release, ok, err := r.lease(ctx, repo.ID)
	if err != nil || !ok {
		if err == nil {
			// Another replica reconciles now; try again on the next change.
			for _, s := range sites {
				r.markDirty(repo.Tenant, s)
			}
		}
		return err
	}
	defer release()
	// Typed for the log level (a lease lost half-way is not a failure);
	// drift reports no commit status and no lastError.
	defer func() {
		if e := asError(ctx, rerr); e != nil {
			rerr = e
		}
	}()
	l, err := r.desiredFromStore(ctx, repo, sites)
	if err != nil {
		return err
	}
	if l == nil {
		if l, err = r.loadApplied(ctx, repo); err != nil {
			return err
		}
	}
	var res Result
	if err := r.planSites(ctx, repo, repo.LastAppliedCommit, l, sites, false, &res); err != nil {
		return err
	}
	if len(res.Stored) > 0 {
		r.log.Info("drift repaired", "tenant", repo.Tenant, "repo", repo.ID, "sites", res.Planned, "summary", res.Summary)
	}
	for s, reason := range res.Refused {
		r.log.Warn("drift repair refused by prune safety", "tenant", repo.Tenant, "site", s, "reason", reason)
	}
	return nil
}

// loadApplied loads the repository's last valid commit from its mirror,
// fetching it first on a fresh data dir.
func (r *Reconciler) loadApplied(ctx context.Context, repo store.Repository) (*loaded, error) {
	head := plumbing.NewHash(repo.LastAppliedCommit)
	m, err := r.mirrorFor(repo.ID, repo.URL)
	if err != nil {
		return nil, err
	}
	if _, err := m.repo.CommitObject(head); err != nil {
		// A fresh data dir (restart elsewhere): fetch the commit.
		if err := r.fetchSHA(ctx, repo, repo.LastAppliedCommit, 0); err != nil {
			return nil, fetchError(err)
		}
	}
	l, err := r.load(ctx, repo, head)
	if err != nil {
		e := loadError(repo.LastAppliedCommit, repo.Path, err)
		e.Err = fmt.Errorf("load last valid commit %s: %w", short(repo.LastAppliedCommit), e.Err)
		return nil, e
	}
	return l, nil
}

// desiredFromStore builds the desired state of sites from the store's
// records, so drift is re-planned without git. It answers nil (read the
// mirror instead) unless every record can be trusted to be the last valid
// commit's: each site recorded with its documents from this repository,
// the commit planned without refusal (a refused site keeps the record of
// an older commit, and must not be repaired towards it), and no record of
// another commit written after it was applied (a newer commit whose
// reconcile stopped half-way records some sites before it is applied).
func (r *Reconciler) desiredFromStore(ctx context.Context, repo store.Repository, sites []string) (*loaded, error) {
	sts, err := r.store.CommitStatuses(ctx, repo.Tenant, repo.ID, repo.LastAppliedCommit)
	if err != nil {
		return nil, fmt.Errorf("statuses of %s: %w", short(repo.LastAppliedCommit), err)
	}
	if !slices.ContainsFunc(sts, func(st store.CommitStatus) bool {
		return st.Context == forge.ContextPlan && st.State == store.StateSuccess
	}) {
		return nil, nil
	}
	l := &loaded{hashes: map[string]string{}, docs: map[string]*siteDoc{}}
	for _, s := range sites {
		d, err := r.store.DesiredState(ctx, repo.Tenant, s)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("desired state of %s: %w", s, err)
		}
		if d.RepoID != repo.ID {
			return nil, nil
		}
		if d.Commit != repo.LastAppliedCommit && d.UpdatedAt.After(repo.LastAppliedAt) {
			return nil, nil
		}
		if d.Document == nil && len(d.VMs) == 0 {
			continue // gone from git: no hash, its managed VMs are pruned
		}
		l.hashes[s] = d.Hash
		l.docs[s] = &siteDoc{Site: d.Document, VMs: d.VMs}
		if d.Document != nil {
			l.desired.Sites = append(l.desired.Sites, *d.Document)
		}
		l.desired.VMs = append(l.desired.VMs, d.VMs...)
	}
	l.once.Do(func() {}) // hashes and docs are the recorded ones
	return l, nil
}

// PreviewNow validates and plans a pull-request head against the live
// inventory, posts nkudo/validate and nkudo/plan on it and stores the
// preview. Nothing is applied. A commit that fails validation is a stored
// preview, not an error; a failure to fetch or read it is an *Error,
// reported on the commit exactly as a reconcile of it would be.
func (r *Reconciler) PreviewNow(ctx context.Context, repo store.Repository, pr int, sha string) (_ store.Preview, rerr error) {
	if !isSHA(sha) {
		return store.Preview{}, fmt.Errorf("preview #%d: %q is not a commit hash", pr, sha)
	}
	defer func() {
		e := asError(ctx, rerr)
		if e == nil {
			return
		}
		if label, state, desc, ok := e.Status(); ok {
			r.setStatus(ctx, repo, sha, label, state, desc)
		}
		rerr = &Error{Reason: e.Reason, State: e.State, Retry: e.Retry, Description: e.Description, Err: fmt.Errorf("preview #%d: %w", pr, e.Err)}
	}()
	if err := r.fetchSHA(ctx, repo, sha, pr); err != nil {
		return store.Preview{}, fetchError(err)
	}
	p := store.Preview{Tenant: repo.Tenant, RepoID: repo.ID, PR: pr, Commit: sha, CreatedAt: r.now()}
	if why, err := r.previewSignature(ctx, repo, plumbing.NewHash(sha)); err != nil || why != "" {
		if err != nil {
			return p, err
		}
		p.Summary, p.PlanText = "unverified: "+why, why+"\n"
		if perr := r.store.PutPreview(ctx, repo.Tenant, p); perr != nil {
			return p, fmt.Errorf("store preview: %w", perr)
		}
		r.comment(ctx, repo, pr, renderPlanComment(planComment{PR: pr, Commit: sha, Summary: p.Summary, Message: why}))
		return p, nil
	}
	l, err := r.load(ctx, repo, plumbing.NewHash(sha))
	if err != nil {
		e := loadError(sha, repo.Path, err)
		if e.Retry {
			return p, e // not a verdict on the commit: no preview stored
		}
		r.setStatus(ctx, repo, sha, forge.ContextValidate, e.State, e.Description)
		p.Summary = "invalid: " + e.Description
		p.PlanText = err.Error() + "\n"
		if perr := r.store.PutPreview(ctx, repo.Tenant, p); perr != nil {
			return p, fmt.Errorf("store preview: %w", perr)
		}
		pc := planComment{PR: pr, Commit: sha, Summary: p.Summary, Message: err.Error(), FileURL: fileURL(repo, sha)}
		errors.As(err, &pc.Errors)
		r.comment(ctx, repo, pr, renderPlanComment(pc))
		return p, nil
	}
	r.setStatus(ctx, repo, sha, forge.ContextValidate, store.StateSuccess,
		fmt.Sprintf("valid: %d sites, %d VMs", len(l.desired.Sites), len(l.desired.VMs)))
	invs, err := r.store.Inventories(ctx, repo.Tenant)
	if err != nil {
		return p, fmt.Errorf("read inventories: %w", err)
	}
	nbGroups, err := r.netbirdGroups(ctx, repo.Tenant, l, nil)
	if err != nil {
		return p, err
	}
	res := diff.Plan(l.desired, invs, diff.Options{Tenant: repo.Tenant, Commit: sha, PruneLimit: r.opts.PruneLimit, NetBirdGroups: nbGroups})
	p.Summary = diff.Summary(res)
	var text, js bytes.Buffer
	if err := diff.RenderText(&text, res, diff.RenderOptions{}); err != nil {
		return p, fmt.Errorf("render preview: %w", err)
	}
	if err := diff.RenderJSON(&js, res); err != nil {
		return p, fmt.Errorf("render preview: %w", err)
	}
	p.PlanText, p.PlanJSON = text.String(), json.RawMessage(bytes.TrimSpace(js.Bytes()))
	refused := ""
	for _, sr := range res.Sites {
		if sr.Refused != "" {
			refused = sr.Site + ": " + sr.Refused
			break
		}
	}
	if refused != "" {
		r.setStatus(ctx, repo, sha, forge.ContextPlan, store.StateFailure, "would be refused: "+refused)
	} else {
		r.setStatus(ctx, repo, sha, forge.ContextPlan, store.StateSuccess, p.Summary)
	}
	if err := r.store.PutPreview(ctx, repo.Tenant, p); err != nil {
		return p, fmt.Errorf("store preview: %w", err)
	}
	r.comment(ctx, repo, pr, renderPlanComment(planComment{PR: pr, Commit: sha, Summary: p.Summary, Result: &res, FullURL: r.previewURL(repo, pr)}))
	return p, nil
}
