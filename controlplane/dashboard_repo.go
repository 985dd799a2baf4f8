package controlplane

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/store"
)

// The dashboard's repository and audit pages. Both read through the same
// tenant-scoped store calls as the API's repository, status, preview and
// audit endpoints; "reconcile now" goes through Server.Reconcile, the
// trigger the REST endpoint uses (same checks, same audit event).

const (
	// maxRepoStatuses bounds the statuses read for a repository page, and
	// maxRepoCommits the commits it lists.
	maxRepoStatuses = 300
	maxRepoCommits  = 30
	// auditPageSize is the number of events per audit page.
	auditPageSize = 100
)

func repoRow(r store.Repository) ui.RepoRow {
	return ui.RepoRow{ID: r.ID, Name: r.Name, URL: r.URL, Branch: r.Branch, Path: r.Path, Suspended: r.Suspended,
		LastSeenCommit: r.LastSeenCommit, LastSeenAt: r.LastSeenAt, LastAppliedCommit: r.LastAppliedCommit,
		LastAppliedAt: r.LastAppliedAt, LastError: r.LastError, LastErrorAt: r.LastErrorAt}
}

func (s *Server) handleReposPage(w http.ResponseWriter, r *http.Request, c *caller) error {
	rs, err := s.store.ListRepositories(r.Context(), c.tenant)
	if err != nil {
		return fmt.Errorf("list repositories: %w", err)
	}
	p := ui.ReposPage{Layout: s.layout(c, "Repositories"), Now: s.now()}
	for _, repo := range rs {
		p.Repos = append(p.Repos, repoRow(repo))
	}
	return s.ui.Render(w, http.StatusOK, "repos.html", p)
}

func (s *Server) handleRepoPage(w http.ResponseWriter, r *http.Request, c *caller) error {
	p, err := s.RepoPage(r, c.tenant, r.PathValue("repo"))
	if err != nil {
		return err
	}
	p.Layout = s.layout(c, "Repository "+p.Repo.Name)
	if r.URL.Query().Get("reconcile") == "queued" {
		p.Notice = "Reconcile queued: the commit statuses below update as it runs (reload to see them)."
	}
	return s.ui.Render(w, http.StatusOK, "repo.html", p)
}

// RepoPage gathers one of the tenant's repositories for its page.
func (s *Server) RepoPage(r *http.Request, tenant, id string) (ui.RepoPage, error) {
	ctx := r.Context()
	repo, err := s.store.GetRepository(ctx, tenant, id)
	if err != nil {
		return ui.RepoPage{}, err
	}
	sts, err := s.store.RecentCommitStatuses(ctx, tenant, repo.ID, maxRepoStatuses)
	if err != nil {
		return ui.RepoPage{}, fmt.Errorf("statuses of repository %s: %w", repo.ID, err)
	}
	in := make([]ui.CommitStatus, 0, len(sts))
	for _, st := range sts {
		in = append(in, ui.CommitStatus{Commit: st.Commit, Context: st.Context, State: string(st.State),
			Description: st.Description, TargetURL: st.TargetURL, UpdatedAt: st.UpdatedAt})
	}
	p := ui.RepoPage{Repo: repoRow(repo), Commits: ui.GroupCommits(in, maxRepoCommits), CanReconcile: s.opts.Reconciler != nil, Now: s.now()}
	for i := range p.Commits {
		p.Commits[i].Applied = p.Commits[i].Commit == repo.LastAppliedCommit
	}
	pvs, err := s.store.ListPreviews(ctx, tenant, repo.ID)
	if err != nil {
		return ui.RepoPage{}, fmt.Errorf("previews of repository %s: %w", repo.ID, err)
	}
	seen := map[int]bool{}
	for _, pv := range pvs { // newest first: keep each pull request's newest
		if seen[pv.PR] {
			continue
		}
		seen[pv.PR] = true
		p.Previews = append(p.Previews, ui.Preview{PR: pv.PR, Commit: pv.Commit, Summary: pv.Summary, Text: previewText(pv), CreatedAt: pv.CreatedAt})
	}
	slices.SortStableFunc(p.Previews, func(a, b ui.Preview) int { return b.PR - a.PR })
	return p, nil
}

// previewText renders a preview as nkudoctl diff does (diff.RenderText
// without colour) from its stored plan; a preview without a plan (an
// invalid or unverified head) keeps its stored text, which says why.
func previewText(pv store.Preview) string {
	if len(pv.PlanJSON) == 0 {
		return pv.PlanText
	}
	var res diff.Result
	if err := json.Unmarshal(pv.PlanJSON, &res); err != nil {
		return pv.PlanText
	}
	var b bytes.Buffer
	if err := diff.RenderText(&b, res, diff.RenderOptions{}); err != nil {
		return pv.PlanText
	}
	return b.String()
}

// handleRepoReconcile is the "reconcile now" form: CSRF-checked, then the
// same trigger as POST /v1/repos/{repo}/reconcile, and back to the page.
func (s *Server) handleRepoReconcile(w http.ResponseWriter, r *http.Request, c *caller) error {
	ui.SecurityHeaders(w.Header())
	if err := r.ParseForm(); err != nil {
		return badRequest("read form: %v", err)
	}
	if !c.session.CheckCSRF(r.PostForm.Get("csrf")) {
		return errorf(http.StatusForbidden, api.CodeForbidden, "the form's csrf field does not match this session: reload the page and try again")
	}
	id := r.PathValue("repo")
	if _, err := s.Reconcile(r.Context(), c, id, ""); err != nil {
		return err
	}
	http.Redirect(w, r, api.Path(ui.PathRepo, id)+"?reconcile=queued", http.StatusSeeOther)
	return nil
}

// handleAuditPage shows the audit log (admin sessions only): the session's
// tenant's events, or with scope=all every event, a page at a time in
// sequence order, and the result of verifying the whole chain.
func (s *Server) handleAuditPage(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.admin {
		return errorf(http.StatusForbidden, api.CodeForbidden, "the audit log is for admin tokens: sign in with one")
	}
	q := r.URL.Query()
	p := ui.AuditPage{Layout: s.layout(c, "Audit")}
	switch q.Get("scope") {
	case "", "tenant":
	case "all":
		p.All = true
	default:
		return badRequest("query parameter scope %q: want tenant or all", q.Get("scope"))
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return badRequest("query parameter after %q: want a sequence number (0 or more)", v)
		}
		p.After = n
	}
	tenant := c.tenant
	if p.All {
		tenant = ""
	}
	evs, err := s.store.ListAudit(r.Context(), tenant, p.After, auditPageSize+1)
	if err != nil {
		return fmt.Errorf("list audit events: %w", err)
	}
	if len(evs) > auditPageSize {
		evs = evs[:auditPageSize]
		p.Next = evs[len(evs)-1].Seq
	}
	for _, e := range evs {
		p.Events = append(p.Events, ui.AuditRow{Seq: e.Seq, Time: e.Time, Tenant: e.Tenant, Actor: e.Actor, Action: e.Action, Object: e.Object, Detail: string(e.Detail)})
	}
	v, err := s.store.VerifyAudit(r.Context())
	if err != nil {
		return fmt.Errorf("verify the audit chain: %w", err)
	}
	p.ChainOK, p.Checked, p.FirstBroken, p.Reason = v.OK(), v.Events, v.FirstBroken, v.Reason
	p.KeyedFrom, p.KeyChecked, p.HeadHash = v.KeyedFrom, v.KeyChecked, v.HeadHash
	return s.ui.Render(w, http.StatusOK, "audit.html", p)
}
