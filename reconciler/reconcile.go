package reconciler

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
	// The store refuses this work's plan and desired-state writes once the
	// lease is gone, even if this replica stalled (GC pause, partition)
	// before it noticed: the renewal below cannot be on time for certain.
	lctx, cancel := context.WithCancelCause(store.WithLease(ctx, store.Lease{Name: name, Holder: r.opts.Holder}))
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
// inventory changed, in phases: fetch (fetch.go), load (load.go), plan
// (plan.go), store (store.go) and report (report.go). It is what a trigger runs; tests and benchmarks call
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
	finish := r.startRequests(ctx, repo.ID)
	defer func() { finish(rerr) }()
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
	if !again {
		r.fresh.baseMoved(repo.Tenant, repo.ID) // open pull requests say so
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

// planSites plans the sites of repo whose desired state (from l) or
// inventory changed since they were last planned, in phases: select the
// sites and plan them (plan.go), store the plans (store.go), and, when
// report is true (a reconcile of a commit, not drift), post nkudo/plan and
// follow nkudo/apply (report.go). only restricts the candidates (nil =
// every site the repository knows). Results land in res.
func (r *Reconciler) planSites(ctx context.Context, repo store.Repository, commit string, l *loaded, only []string, report bool, res *Result) error {
	sel, err := r.selectSites(ctx, repo, commit, l, only, report)
	if err != nil {
		return err
	}
	res.Planned = sel.toPlan
	p, err := r.plan(ctx, repo, commit, l, sel)
	if err != nil {
		return err
	}
	res.Summary = p.summary
	if !p.none {
		res.Refused = p.refused
	}
	if err := r.storePlans(ctx, repo, commit, l, sel, p, res); err != nil {
		return err
	}
	if report {
		r.reportPlans(ctx, repo, commit, p, res)
	}
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
	// Read again under the lease: the task may have waited while the
	// repository was suspended, and a suspended repository's drift is
	// left alone.
	if repo, err = r.store.GetRepository(ctx, repo.Tenant, repo.ID); err != nil {
		return fmt.Errorf("load repository: %w", err)
	}
	if repo.Suspended {
		r.done.suspended.Add(1)
		return nil
	}
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
	p := store.Preview{Tenant: repo.Tenant, RepoID: repo.ID, PR: pr, Commit: sha, CreatedAt: r.now(), Base: repo.LastAppliedCommit}
	prev := r.lastPreview(ctx, repo, pr) // what a re-computed comment compares with
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
	p.Inventories = inventoryVersions(res, invs)
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
		state, desc := r.gatePlan(ctx, repo, pr, res, p.Summary) // destructive plans need the label
		r.setStatus(ctx, repo, sha, forge.ContextPlan, state, desc)
	}
	if err := r.store.PutPreview(ctx, repo.Tenant, p); err != nil {
		return p, fmt.Errorf("store preview: %w", err)
	}
	r.comment(ctx, repo, pr, renderPlanComment(planComment{PR: pr, Commit: sha, Summary: p.Summary, Result: &res, FullURL: r.previewURL(repo, pr),
		Base: p.Base, Inventories: p.Inventories, Changes: freshness(prev, p)}))
	return p, nil
}
