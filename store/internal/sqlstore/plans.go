package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

const planCols = `id, tenant, site, repo_id, body, status, superseded_by, superseded_commit, created_at, updated_at`

func scanPlan(r Row) (store.StoredPlan, error) {
	var v planScan
	if err := r.Scan(v.dest()...); err != nil {
		return v.p, err
	}
	return v.plan()
}

// planScan holds a plan row's columns (planCols) as scanned.
type planScan struct {
	p                              store.StoredPlan
	id, tenant, site, body, status string
	created, updated               int64
}

func (v *planScan) dest() []any {
	return []any{&v.id, &v.tenant, &v.site, &v.p.RepoID, &v.body, &v.status, &v.p.SupersededBy, &v.p.SupersededByCommit, &v.created, &v.updated}
}

func (v *planScan) plan() (store.StoredPlan, error) {
	p := v.p
	if err := json.Unmarshal([]byte(v.body), &p.Plan); err != nil {
		return p, fmt.Errorf("decode plan %s: %w", v.id, err)
	}
	p.Plan.ID, p.Plan.Tenant, p.Plan.Site = v.id, v.tenant, v.site
	p.Status = model.PlanStatus(v.status)
	p.CreatedAt, p.UpdatedAt = tm(v.created), tm(v.updated)
	return p, nil
}

const actionCols = `plan_id, idx, body, status, result, error, started_at, finished_at`

func scanAction(r Row) (store.ActionRecord, error) {
	var v actionScan
	if err := r.Scan(v.dest()...); err != nil {
		return v.a, err
	}
	return v.action()
}

// actionScan holds an action row's columns (actionCols) as scanned.
type actionScan struct {
	a                            store.ActionRecord
	planID, body, status, result string
	started, finished            int64
}

func (v *actionScan) dest() []any {
	return []any{&v.planID, &v.a.Index, &v.body, &v.status, &v.result, &v.a.Error, &v.started, &v.finished}
}

func (v *actionScan) action() (store.ActionRecord, error) {
	a := v.a
	if err := json.Unmarshal([]byte(v.body), &a.Action); err != nil {
		return a, fmt.Errorf("decode action of plan %s: %w", v.planID, err)
	}
	a.Status = model.ActionStatus(v.status)
	a.Output = raw(v.result)
	a.StartedAt, a.FinishedAt = tm(v.started), tm(v.finished)
	return a, nil
}

// planWithActions reads the plan whose id the subquery pick selects, with
// its actions, in one statement: no transaction, so one round trip where
// BEGIN, two queries and COMMIT took four (the long-poll reads it on
// every wake-up). A single statement sees one snapshot, as the
// transaction did. ErrNotFound when pick selects nothing.
func (s *Store) planWithActions(ctx context.Context, pick string, args ...any) (store.StoredPlan, error) {
	var p store.StoredPlan
	found := false
	err := s.read1(ctx, func(c Conn) error {
		rows, err := c.Query(ctx, `SELECT p.id, p.tenant, p.site, p.repo_id, p.body, p.status, p.superseded_by,
				p.superseded_commit, p.created_at, p.updated_at,
				COALESCE(a.plan_id, ''), COALESCE(a.idx, -1), COALESCE(a.body, ''), COALESCE(a.status, ''),
				COALESCE(a.result, ''), COALESCE(a.error, ''), COALESCE(a.started_at, 0), COALESCE(a.finished_at, 0)
			FROM plans p LEFT JOIN actions a ON a.plan_id = p.id
			WHERE p.id = (`+pick+`) ORDER BY a.idx`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var pv planScan
			var av actionScan
			if err := rows.Scan(append(pv.dest(), av.dest()...)...); err != nil {
				return err
			}
			if !found {
				if p, err = pv.plan(); err != nil {
					return err
				}
				p.Plan.Actions = []model.Action{}
				found = true
			}
			if av.planID == "" {
				continue // a plan without actions: the join's one empty row
			}
			a, err := av.action()
			if err != nil {
				return err
			}
			p.Actions = append(p.Actions, a)
			p.Plan.Actions = append(p.Plan.Actions, a.Action)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if !found {
			return store.ErrNotFound
		}
		return nil
	})
	return p, err
}

// loadActions fills p.Actions and p.Plan.Actions from the actions table.
func (s *Store) loadActions(ctx context.Context, c Conn, p *store.StoredPlan) error {
	rows, err := c.Query(ctx, `SELECT `+actionCols+` FROM actions WHERE plan_id = $1 ORDER BY idx`, p.Plan.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	p.Actions = nil
	p.Plan.Actions = []model.Action{}
	for rows.Next() {
		a, err := scanAction(rows)
		if err != nil {
			return err
		}
		p.Actions = append(p.Actions, a)
		p.Plan.Actions = append(p.Plan.Actions, a.Action)
	}
	return rows.Err()
}

// StorePlan implements store.Plans. The site row is locked first, so two
// replicas storing plans for one site take turns; the plan row's primary
// key is the final word on duplicates.
func (s *Store) StorePlan(ctx context.Context, actor store.Actor, p model.Plan, repoID string, now time.Time) (bool, error) {
	body, err := planBody(p)
	if err != nil {
		return false, err
	}
	var stored bool
	err = s.write(ctx, func(t *wtx) error {
		var err error
		stored, err = s.storePlan(ctx, t, actor, p, body, repoID, now)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store plan %s for %s/%s: %w", p.ID, p.Tenant, p.Site, err)
	}
	return stored, nil
}

// planBody checks p and encodes its head (the plan without actions).
func planBody(p model.Plan) (string, error) {
	if p.ID == "" || p.Tenant == "" || p.Site == "" || len(p.Actions) == 0 {
		return "", fmt.Errorf("store plan %q: %w", p.ID, errInvalid("id, tenant, site and at least one action are required"))
	}
	seen := map[string]bool{}
	for i, a := range p.Actions {
		if a.ID == "" || seen[a.ID] {
			return "", fmt.Errorf("store plan %s: action %d: %w", p.ID, i, errInvalid("empty or repeated action id"))
		}
		seen[a.ID] = true
	}
	head := p
	head.Actions = nil
	body, err := json.Marshal(head)
	if err != nil {
		return "", fmt.Errorf("encode plan %s: %w", p.ID, err)
	}
	return string(body), nil
}

// storePlan is StorePlan inside the write transaction t (body from planBody).
func (s *Store) storePlan(ctx context.Context, t *wtx, actor store.Actor, p model.Plan, body, repoID string, now time.Time) (bool, error) {
	if err := s.lockSite(ctx, t, p.Tenant, p.Site); err != nil {
		return false, err
	}
	at := us(store.Micro(now))
	if at == 0 {
		at = us(t.now)
	}
	var status, tenant, site string
	err := t.QueryRow(ctx, `SELECT status, tenant, site FROM plans WHERE id = $1`, p.ID).Scan(&status, &tenant, &site)
	switch {
	case err == nil && (tenant != p.Tenant || site != p.Site):
		return false, fmt.Errorf("plan id %s belongs to another site: %w", p.ID, store.ErrConflict)
	case err == nil && model.PlanStatus(status) != model.PlanSuperseded:
		return false, nil // already stored: nothing to do
	case err == nil:
		// Superseded earlier, wanted again: revive it. Actions that
		// already finished keep their results.
		if err := s.revivePlan(ctx, t, p.ID, at); err != nil {
			return false, err
		}
	case s.b.IsNoRows(err):
		if _, err := t.Exec(ctx, `INSERT INTO plans (id, tenant, site, repo_id, commit_sha, inventory_version, body, status, superseded_by, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', '', $8, $8)`,
			p.ID, p.Tenant, p.Site, repoID, p.Commit, p.InventoryVersion, body, at); err != nil {
			return false, err
		}
		for from := 0; from < len(p.Actions); from += batchRows {
			chunk := p.Actions[from:min(from+batchRows, len(p.Actions))]
			args := make([]any, 0, 5*len(chunk))
			for i, a := range chunk {
				ab, err := json.Marshal(a)
				if err != nil {
					return false, fmt.Errorf("encode action %s: %w", a.ID, err)
				}
				args = append(args, p.ID, a.ID, from+i, string(ab), string(model.ActionPending))
			}
			if _, err := t.Exec(ctx, `INSERT INTO actions (plan_id, id, idx, body, status) VALUES `+values(len(chunk), 5), args...); err != nil {
				return false, err
			}
		}
	default:
		return false, err
	}
	if _, err := t.Exec(ctx, `UPDATE plans SET status = 'superseded', superseded_by = $1, superseded_commit = $5, updated_at = $2
		WHERE tenant = $3 AND site = $4 AND id <> $1 AND status IN ('pending', 'in_progress')`,
		p.ID, at, p.Tenant, p.Site, p.Commit); err != nil {
		return false, err
	}
	t.audit(p.Tenant, actor, "plan.store", "plan/"+p.ID, map[string]any{
		"site": p.Site, "commit": p.Commit, "repo": repoID, "actions": len(p.Actions), "inventoryVersion": p.InventoryVersion,
	})
	t.notify(store.PlanTopic(p.Tenant, p.Site))
	t.notify(store.FleetTopic(p.Tenant))
	return true, nil
}

// SupersedeActivePlan implements store.Plans. Like StorePlan it locks the
// site row first, so it takes turns with plans being stored for the site.
func (s *Store) SupersedeActivePlan(ctx context.Context, actor store.Actor, tenant, site, commit, reason string, now time.Time) (store.StoredPlan, error) {
	at := us(store.Micro(now))
	var p store.StoredPlan
	err := s.write(ctx, func(t *wtx) error {
		if err := s.checkFence(ctx, t); err != nil {
			return err
		}
		if err := s.lockSite(ctx, t, tenant, site); err != nil {
			return err
		}
		if at == 0 {
			at = us(t.now)
		}
		var err error
		p, err = scanPlan(t.QueryRow(ctx, `SELECT `+planCols+` FROM plans
			WHERE tenant = $1 AND site = $2 AND status IN ('pending', 'in_progress') ORDER BY updated_at DESC LIMIT 1`, tenant, site))
		if err != nil {
			return fmt.Errorf("no active plan: %w", s.notFound(err))
		}
		prev := p.Status
		if _, err := t.Exec(ctx, `UPDATE plans SET status = 'superseded', superseded_by = '', superseded_commit = $1, updated_at = $2
			WHERE tenant = $3 AND site = $4 AND status IN ('pending', 'in_progress')`,
			commit, at, tenant, site); err != nil {
			return err
		}
		p.Status, p.SupersededBy, p.SupersededByCommit, p.UpdatedAt = model.PlanSuperseded, "", commit, tm(at)
		t.audit(tenant, actor, "plan.supersede", "plan/"+p.Plan.ID, map[string]any{
			"site": site, "commit": commit, "planCommit": p.Plan.Commit, "was": string(prev), "reason": reason,
		})
		t.notify(store.PlanTopic(tenant, site))
		t.notify(store.FleetTopic(tenant))
		return s.loadActions(ctx, t, &p)
	})
	if err != nil {
		return store.StoredPlan{}, fmt.Errorf("supersede active plan of %s/%s: %w", tenant, site, err)
	}
	return p, nil
}

// GetPlan implements store.Plans.
func (s *Store) GetPlan(ctx context.Context, tenant, id string) (store.StoredPlan, error) {
	p, err := s.planWithActions(ctx, `SELECT id FROM plans WHERE tenant = $1 AND id = $2`, tenant, id)
	if err != nil {
		return store.StoredPlan{}, fmt.Errorf("get plan %s/%s: %w", tenant, id, err)
	}
	return p, nil
}

// ActivePlan implements store.Plans.
func (s *Store) ActivePlan(ctx context.Context, tenant, site string) (store.StoredPlan, error) {
	p, err := s.planWithActions(ctx, `SELECT id FROM plans
		WHERE tenant = $1 AND site = $2 AND status IN ('pending', 'in_progress') ORDER BY updated_at DESC LIMIT 1`, tenant, site)
	if err != nil {
		return store.StoredPlan{}, fmt.Errorf("active plan of %s/%s: %w", tenant, site, err)
	}
	return p, nil
}

// ActivePlanIDs implements store.Plans.
func (s *Store) ActivePlanIDs(ctx context.Context, tenant, repoID string) (map[string]string, error) {
	type idSite struct{ id, site string }
	list, err := readAll(ctx, s, func(r Row) (idSite, error) {
		var v idSite
		err := r.Scan(&v.id, &v.site)
		return v, err
	}, `SELECT id, site FROM plans WHERE tenant = $1 AND repo_id = $2 AND status IN ('pending', 'in_progress')`, tenant, repoID)
	if err != nil {
		return nil, fmt.Errorf("active plans of repository %s/%s: %w", tenant, repoID, err)
	}
	out := make(map[string]string, len(list))
	for _, v := range list {
		out[v.id] = v.site
	}
	return out, nil
}

// ListPlans implements store.Plans.
func (s *Store) ListPlans(ctx context.Context, tenant string, f store.PlanFilter) ([]store.StoredPlan, error) {
	where := []string{`tenant = $1`}
	args := []any{tenant}
	add := func(col, v string) {
		if v != "" {
			args = append(args, v)
			where = append(where, fmt.Sprintf(`%s = $%d`, col, len(args)))
		}
	}
	add("site", f.Site)
	add("commit_sha", f.Commit)
	add("repo_id", f.RepoID)
	add("status", string(f.Status))
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	args = append(args, limit)
	q := fmt.Sprintf(`SELECT %s FROM plans WHERE %s ORDER BY created_at DESC, id LIMIT $%d`, planCols, strings.Join(where, " AND "), len(args))
	var out []store.StoredPlan
	err := s.read(ctx, func(c Conn) error {
		rows, err := c.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			p, err := scanPlan(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if f.WithActions {
			for i := range out {
				if err := s.loadActions(ctx, c, &out[i]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list plans of %s: %w", tenant, err)
	}
	return out, nil
}

// planOf reads a plan's status and checks it belongs to tenant/site.
func (s *Store) planOf(ctx context.Context, t *wtx, tenant, site, planID string) (model.PlanStatus, error) {
	var status string
	err := t.QueryRow(ctx, `SELECT status FROM plans WHERE tenant = $1 AND site = $2 AND id = $3`+s.d.ForUpdate,
		tenant, site, planID).Scan(&status)
	if err != nil {
		return "", fmt.Errorf("plan %s: %w", planID, s.notFound(err))
	}
	return model.PlanStatus(status), nil
}

// StartAction implements store.Plans.
func (s *Store) StartAction(ctx context.Context, tenant, site, planID, actionID string, now time.Time) error {
	err := s.write(ctx, func(t *wtx) error {
		return s.startAction(ctx, t, tenant, site, planID, actionID, now)
	})
	if err != nil {
		return fmt.Errorf("start action %s of plan %s: %w", actionID, planID, err)
	}
	return nil
}

// StartActions implements store.Plans.
func (s *Store) StartActions(ctx context.Context, tenant, site string, starts []store.ActionStart) error {
	if len(starts) == 0 {
		return nil
	}
	return s.write(ctx, func(t *wtx) error {
		for _, a := range starts {
			if err := s.startAction(ctx, t, tenant, site, a.PlanID, a.ActionID, a.Time); err != nil {
				return fmt.Errorf("start action %s of plan %s: %w", a.ActionID, a.PlanID, err)
			}
		}
		return nil
	})
}

// startAction marks one pending action running in t (store.StartAction).
func (s *Store) startAction(ctx context.Context, t *wtx, tenant, site, planID, actionID string, now time.Time) error {
	at := us(store.Micro(now))
	status, err := s.planOf(ctx, t, tenant, site, planID)
	if err != nil {
		return err
	}
	var astatus string
	if err := t.QueryRow(ctx, `SELECT status FROM actions WHERE plan_id = $1 AND id = $2`, planID, actionID).Scan(&astatus); err != nil {
		return fmt.Errorf("action %s: %w", actionID, s.notFound(err))
	}
	if model.ActionStatus(astatus) != model.ActionPending {
		// Already running or finished: a repeated or late report.
		return nil
	}
	if status == model.PlanSuperseded {
		return store.ErrSuperseded
	}
	if _, err := t.Exec(ctx, `UPDATE actions SET status = 'running', started_at = $1 WHERE plan_id = $2 AND id = $3`,
		at, planID, actionID); err != nil {
		return err
	}
	if status == model.PlanPending {
		if _, err := t.Exec(ctx, `UPDATE plans SET status = 'in_progress', updated_at = $1 WHERE id = $2`, at, planID); err != nil {
			return err
		}
	}
	return nil
}

// RecordActionResult implements store.Plans.
func (s *Store) RecordActionResult(ctx context.Context, actor store.Actor, tenant, site string, r store.ActionResult) (store.ResultOutcome, error) {
	outs, err := s.RecordActionResults(ctx, actor, tenant, site, []store.ActionResult{r})
	if err != nil {
		return store.ResultOutcome{}, err
	}
	return outs[0], nil
}

// RecordActionResults implements store.Store.
func (s *Store) RecordActionResults(ctx context.Context, actor store.Actor, tenant, site string, rs []store.ActionResult) ([]store.ResultOutcome, error) {
	results := make([][]byte, len(rs))
	for i, r := range rs {
		switch r.Status {
		case model.ActionSucceeded, model.ActionFailed, model.ActionSkipped:
		default:
			return nil, fmt.Errorf("record result of action %s: %w", r.ActionID, errInvalid("status %q is not terminal", r.Status))
		}
		results[i] = store.CompactJSON(r.Output)
		if len(results[i]) > 0 && !json.Valid(results[i]) {
			return nil, fmt.Errorf("record result of action %s: %w", r.ActionID, errInvalid("result is not JSON"))
		}
	}
	outs := make([]store.ResultOutcome, len(rs))
	err := s.write(ctx, func(t *wtx) error {
		for i, r := range rs {
			o, err := s.recordResult(ctx, t, actor, tenant, site, r, results[i])
			if err != nil {
				return fmt.Errorf("record result of action %s of plan %s: %w", r.ActionID, r.PlanID, err)
			}
			outs[i] = o
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return outs, nil
}

// recordResult records one finished action in t; result is r.Output compacted.
func (s *Store) recordResult(ctx context.Context, t *wtx, actor store.Actor, tenant, site string, r store.ActionResult, result []byte) (store.ResultOutcome, error) {
	var out store.ResultOutcome
	status, err := s.planOf(ctx, t, tenant, site, r.PlanID)
	if err != nil {
		return out, err
	}
	out.PlanStatus = status
	var astatus, aresult, aerr string
	var started int64
	if err := t.QueryRow(ctx, `SELECT status, result, error, started_at FROM actions WHERE plan_id = $1 AND id = $2`,
		r.PlanID, r.ActionID).Scan(&astatus, &aresult, &aerr, &started); err != nil {
		return out, fmt.Errorf("action %s: %w", r.ActionID, s.notFound(err))
	}
	switch model.ActionStatus(astatus) {
	case model.ActionPending, model.ActionRunning:
	default:
		if model.ActionStatus(astatus) == r.Status && aresult == string(result) && aerr == r.Error {
			return out, nil // the same result again: accepted once already
		}
		return out, fmt.Errorf("action %s already %s with another result: %w", r.ActionID, astatus, store.ErrConflict)
	}
	startedAt := us(store.Micro(r.StartedAt))
	if startedAt == 0 {
		startedAt = started
	}
	finished := r.FinishedAt
	if finished.IsZero() {
		finished = t.now
	}
	if _, err := t.Exec(ctx, `UPDATE actions SET status = $1, result = $2, error = $3, started_at = $4, finished_at = $5
		WHERE plan_id = $6 AND id = $7`,
		string(r.Status), string(result), r.Error, startedAt, us(store.Micro(finished)), r.PlanID, r.ActionID); err != nil {
		return out, err
	}
	out.New = true
	next := status
	if status != model.PlanSuperseded {
		var open, failed int
		if err := t.QueryRow(ctx, `SELECT
			COALESCE(SUM(CASE WHEN status IN ('pending', 'running') THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0)
			FROM actions WHERE plan_id = $1`, r.PlanID).Scan(&open, &failed); err != nil {
			return out, err
		}
		switch {
		case failed > 0:
			next = model.PlanFailed
		case open == 0:
			next = model.PlanSucceeded
		default:
			next = model.PlanInProgress
		}
		if next != status {
			if _, err := t.Exec(ctx, `UPDATE plans SET status = $1, updated_at = $2 WHERE id = $3`,
				string(next), us(t.now), r.PlanID); err != nil {
				return out, err
			}
			if next == model.PlanSucceeded || next == model.PlanFailed {
				// Not the plan topic: a plan ending changes no parked
				// long-poll's answer (nothing is active, and it did not end
				// superseded), and under a rollout every site's poll woke
				// for a read that found nothing new. The control plane
				// wakes the plan's dashboard stream after the report.
				t.notify(store.FleetTopic(tenant))
			}
		}
	}
	out.PlanStatus = next
	detail := map[string]any{"plan": r.PlanID, "status": r.Status, "planStatus": next}
	if r.Error != "" {
		detail["error"] = r.Error
	}
	t.audit(tenant, actor, "action.result", "action/"+r.ActionID, detail)
	return out, nil
}

// PrunePlans implements store.Maintenance. Foreign keys cascade to actions
// and log lines.
func (s *Store) PrunePlans(ctx context.Context, actor store.Actor, cutoff time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(t *wtx) (err error) {
		n, err = t.Exec(ctx, `DELETE FROM plans WHERE status IN ('succeeded', 'failed', 'superseded') AND updated_at < $1`,
			us(store.Micro(cutoff)))
		if err == nil && n > 0 {
			t.audit("", actor, "plans.prune", "", map[string]any{"deleted": n, "before": store.Micro(cutoff)})
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune plans: %w", err)
	}
	return n, nil
}

// plansBatchable says whether storePlans may store the plans of recs
// together: no two plans for one site and no plan id twice. A batch with
// either is stored plan by plan (storePlan), so each plan sees the one
// before it exactly as separate calls would.
func plansBatchable(recs []store.SitePlanRecord) bool {
	sites, ids := map[string]bool{}, map[string]bool{}
	for _, rec := range recs {
		if p := rec.Plan; p != nil {
			if sites[p.Site] || ids[p.ID] {
				return false
			}
			sites[p.Site], ids[p.ID] = true, true
		}
	}
	return true
}

// storePlans is storePlan for the plans of recs (encoded by encodeRecords;
// plansBatchable(recs) must hold), with a few statements per batch instead
// of several per plan: one locks the sites, one reads which plans exist,
// multi-row INSERTs write plans and actions, one UPDATE supersedes the
// older active plans. A plan whose site is not registered gets
// out[i].Err wrapping ErrNotFound; out[i].Stored is storePlan's answer.
func (s *Store) storePlans(ctx context.Context, t *wtx, actor store.Actor, tenant, repoID string, recs []store.SitePlanRecord, enc encoded, now time.Time, out []store.SitePlanResult) error {
	at := us(store.Micro(now))
	if at == 0 {
		at = us(t.now)
	}
	var idx []int // records with a plan, by site: the lock order
	for i, rec := range recs {
		if rec.Plan != nil {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	sort.Slice(idx, func(a, b int) bool { return recs[idx[a]].Plan.Site < recs[idx[b]].Plan.Site })

	// Lock the sites' rows, as storePlan does one by one; a site that is
	// not there is not registered.
	registered := map[string]bool{}
	for from := 0; from < len(idx); from += batchRows {
		chunk := idx[from:min(from+batchRows, len(idx))]
		args := make([]any, 0, 1+len(chunk))
		args = append(args, tenant)
		for _, i := range chunk {
			args = append(args, recs[i].Plan.Site)
		}
		err := s.scanEach(ctx, t, func(r Row) error {
			var site string
			if err := r.Scan(&site); err != nil {
				return err
			}
			registered[site] = true
			return nil
		}, `SELECT name FROM sites WHERE tenant = $1 AND name IN (`+list(2, len(chunk))+`) ORDER BY name`+s.d.ForUpdate, args...)
		if err != nil {
			return fmt.Errorf("lock sites: %w", err)
		}
	}
	live := idx[:0:0] // records whose site is registered
	for _, i := range idx {
		p := recs[i].Plan
		if !registered[p.Site] {
			out[i].Err = fmt.Errorf("record plan %s: %w", p.ID, fmt.Errorf("site %s/%s: %w", tenant, p.Site, store.ErrNotFound))
			continue
		}
		live = append(live, i)
	}

	// Which plans exist already (stored before, or superseded since).
	type existing struct{ status, tenant, site string }
	have := map[string]existing{}
	for from := 0; from < len(live); from += batchRows {
		chunk := live[from:min(from+batchRows, len(live))]
		args := make([]any, 0, len(chunk))
		for _, i := range chunk {
			args = append(args, recs[i].Plan.ID)
		}
		err := s.scanEach(ctx, t, func(r Row) error {
			var id string
			var e existing
			if err := r.Scan(&id, &e.status, &e.tenant, &e.site); err != nil {
				return err
			}
			have[id] = e
			return nil
		}, `SELECT id, status, tenant, site FROM plans WHERE id IN (`+list(1, len(chunk))+`)`, args...)
		if err != nil {
			return fmt.Errorf("read plans: %w", err)
		}
	}
	var insert, stored []int
	for _, i := range live {
		p := recs[i].Plan
		e, ok := have[p.ID]
		switch {
		case !ok:
			insert = append(insert, i)
		case e.tenant != p.Tenant || e.site != p.Site:
			return fmt.Errorf("plan of %s: plan id %s belongs to another site: %w", p.Site, p.ID, store.ErrConflict)
		case model.PlanStatus(e.status) != model.PlanSuperseded:
			continue // already stored: nothing to do
		default:
			if err := s.revivePlan(ctx, t, p.ID, at); err != nil {
				return fmt.Errorf("plan of %s: %w", p.Site, err)
			}
		}
		stored = append(stored, i)
	}

	for from := 0; from < len(insert); from += batchRows {
		chunk := insert[from:min(from+batchRows, len(insert))]
		args := make([]any, 0, 11*len(chunk))
		for _, i := range chunk {
			p := recs[i].Plan
			args = append(args, p.ID, p.Tenant, p.Site, repoID, p.Commit, p.InventoryVersion, enc.bodies[i], string(model.PlanPending), "", at, at)
		}
		if _, err := t.Exec(ctx, `INSERT INTO plans (id, tenant, site, repo_id, commit_sha, inventory_version, body, status, superseded_by, created_at, updated_at) VALUES `+
			values(len(chunk), 11), args...); err != nil {
			return fmt.Errorf("insert %d plans: %w", len(chunk), err)
		}
	}
	// The actions of all new plans, batchRows rows per statement.
	args := make([]any, 0, 5*batchRows)
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		_, err := t.Exec(ctx, `INSERT INTO actions (plan_id, id, idx, body, status) VALUES `+values(len(args)/5, 5), args...)
		args = args[:0]
		return err
	}
	for _, i := range insert {
		p := recs[i].Plan
		for n, a := range p.Actions {
			args = append(args, p.ID, a.ID, n, enc.actions[i][n], string(model.ActionPending))
			if len(args) == cap(args) {
				if err := flush(); err != nil {
					return fmt.Errorf("insert actions: %w", err)
				}
			}
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("insert actions: %w", err)
	}

	// Each stored plan supersedes the other active plans of its site.
	for from := 0; from < len(stored); from += batchRows {
		chunk := stored[from:min(from+batchRows, len(stored))]
		args := make([]any, 0, 2+3*len(chunk))
		args = append(args, at, tenant)
		for _, i := range chunk {
			p := recs[i].Plan
			args = append(args, p.Site, p.ID, p.Commit)
		}
		if _, err := t.Exec(ctx, `UPDATE plans SET status = 'superseded', superseded_by = v.column2, superseded_commit = v.column3, updated_at = $1
			FROM (VALUES `+valuesFrom(3, len(chunk), 3)+`) AS v
			WHERE plans.tenant = $2 AND plans.site = v.column1 AND plans.id <> v.column2 AND plans.status IN ('pending', 'in_progress')`, args...); err != nil {
			return fmt.Errorf("supersede older plans: %w", err)
		}
	}
	sort.Ints(stored) // audit events in record order, as one call after another
	for _, i := range stored {
		p := recs[i].Plan
		out[i].Stored = true
		t.audit(p.Tenant, actor, "plan.store", "plan/"+p.ID, map[string]any{
			"site": p.Site, "commit": p.Commit, "repo": repoID, "actions": len(p.Actions), "inventoryVersion": p.InventoryVersion,
		})
		t.notify(store.PlanTopic(p.Tenant, p.Site))
	}
	return nil
}

// revivePlan makes a superseded plan active again (storePlan's rule: the
// actions that finished keep their results).
func (s *Store) revivePlan(ctx context.Context, t *wtx, id string, at int64) error {
	revived := model.PlanPending
	var done int
	if err := t.QueryRow(ctx, `SELECT COUNT(*) FROM actions WHERE plan_id = $1 AND status <> 'pending'`, id).Scan(&done); err != nil {
		return err
	}
	if done > 0 {
		revived = model.PlanInProgress
	}
	_, err := t.Exec(ctx, `UPDATE plans SET status = $1, superseded_by = '', superseded_commit = '', updated_at = $2 WHERE id = $3`,
		string(revived), at, id)
	return err
}

// scanEach runs the query q in c and calls scan for each row.
func (s *Store) scanEach(ctx context.Context, c Conn, scan func(Row) error, q string, args ...any) error {
	rows, err := c.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
