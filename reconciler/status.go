package reconciler

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/webhooks"
)

// repoReporters are the status reporters of one repository, rebuilt when
// its forge settings change.
type repoReporters struct {
	config string
	list   []*forge.Reporter
	// comments write the plan comment of pull requests, one per writer
	// whose forge has them.
	comments []*forge.CommentReporter
	cancel   context.CancelFunc
}

// forgeConfig is everything writersFromRepo reads, so a change to any of it
// rebuilds the writers (the git-notes writer pushes with CredentialsRef).
func forgeConfig(repo store.Repository) string {
	return strings.Join([]string{string(repo.ForgeKind), repo.ForgeAPIURL, repo.ForgeProject, repo.ForgeCredentialsRef, repo.URL, repo.CredentialsRef}, "\x00")
}

// targetURL links a status to the commit's page on the control plane.
func (r *Reconciler) targetURL(repo store.Repository, sha string) string {
	if r.opts.PublicURL == "" {
		return ""
	}
	return strings.TrimRight(r.opts.PublicURL, "/") + "/v1/repos/" + repo.ID + "/commits/" + sha + "/statuses"
}

// setStatus records a commit status in the store and, when it changed,
// queues it for the forge. It never waits for the forge.
func (r *Reconciler) setStatus(ctx context.Context, repo store.Repository, sha, label string, state store.StatusState, desc string) {
	cs := store.CommitStatus{
		Tenant: repo.Tenant, RepoID: repo.ID, Commit: sha, Context: label,
		State: state, Description: forge.Trim(desc, 1000), TargetURL: r.targetURL(repo, sha), UpdatedAt: r.now(),
	}
	set := r.store.SetCommitStatus
	if label == forge.ContextApply {
		// Every replica may track a commit (each adopts pending ones at
		// start); the store keeps the first final verdict, so the forge
		// gets exactly one.
		set = r.store.SetCommitStatusOnce
	}
	changed, err := set(ctx, repo.Tenant, cs)
	if err != nil {
		r.log.Error("store commit status", "repo", repo.ID, "commit", sha, "context", label, "err", err)
		changed = true // the forge still gets it
	}
	if changed {
		r.report(ctx, repo, cs)
	}
}

func (r *Reconciler) report(ctx context.Context, repo store.Repository, cs store.CommitStatus) {
	reps, err := r.reportersFor(ctx, repo)
	if err != nil {
		r.log.Error("status writers", "repo", repo.ID, "err", err)
		return
	}
	for _, rep := range reps {
		rep.Report(forge.Status{SHA: cs.Commit, Context: cs.Context, State: forge.State(cs.State), Description: cs.Description, TargetURL: cs.TargetURL, Ref: repo.Branch})
	}
}

func (r *Reconciler) reportersFor(ctx context.Context, repo store.Repository) ([]*forge.Reporter, error) {
	cfg := forgeConfig(repo) + r.credentialStamps(ctx, repo)
	r.mu.Lock()
	rr, ok := r.reporters[repo.ID]
	runCtx := r.runCtx
	r.mu.Unlock()
	if ok && rr.config == cfg {
		return rr.list, nil
	}
	if runCtx == nil {
		// Used without Run (tests, benchmarks): the reporters outlive the
		// reconcile that started them, until Close.
		runCtx = context.WithoutCancel(ctx)
	}
	var writers []forge.Writer
	var err error
	if r.opts.Writers != nil {
		writers, err = r.opts.Writers(ctx, repo)
	} else {
		writers, err = r.writersFromRepo(ctx, repo)
	}
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(runCtx)
	nr := &repoReporters{config: cfg, cancel: cancel}
	for _, w := range writers {
		o := r.opts.Reporter
		o.Prefix = r.opts.StatusPrefix
		o.Logger = r.opts.Logger
		tenant := repo.Tenant
		o.OnPosted = func(st forge.Status) {
			err := r.store.MarkCommitStatusPosted(rctx, tenant, store.CommitStatus{
				Tenant: tenant, RepoID: repo.ID, Commit: st.SHA, Context: st.Context,
				State: store.StatusState(st.State), Description: st.Description, TargetURL: st.TargetURL,
			}, r.now())
			if err != nil && rctx.Err() == nil {
				r.log.Debug("mark status posted", "repo", repo.ID, "err", err)
			}
		}
		nr.list = append(nr.list, forge.NewReporter(w, o))
		if c, ok := w.(forge.Commenter); ok {
			nr.comments = append(nr.comments, forge.NewCommentReporter(c, forge.CommentReporterOptions{
				Marker: forge.PlanMarker(r.opts.StatusPrefix), MinBackoff: o.MinBackoff, MaxBackoff: o.MaxBackoff,
				MaxAttempts: o.MaxAttempts, Timeout: o.PostTimeout, Logger: r.opts.Logger,
			}))
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.reporters[repo.ID]; ok && cur.config == cfg {
		// Another reconcile built them meanwhile: use those, so no status
		// goes to a reporter that is then replaced, and two writers never
		// race each other to one forge.
		cancel()
		return cur.list, nil
	}
	if old, ok := r.reporters[repo.ID]; ok {
		old.cancel()
	}
	for _, rep := range nr.list {
		r.reporterWG.Go(func() { rep.Run(rctx) })
	}
	for _, cr := range nr.comments {
		r.reporterWG.Go(func() { cr.Run(rctx) })
	}
	r.reporters[repo.ID] = nr
	return nr.list, nil
}

// comment queues body as the plan comment of pull request pr on the
// repository's forge. It never waits for the forge: a failure is logged
// and retried by the comment reporter, never a failure of the preview.
func (r *Reconciler) comment(ctx context.Context, repo store.Repository, pr int, body string) {
	r.mu.Lock()
	closed := r.closedPRs[prKey(repo.ID, pr)]
	r.mu.Unlock()
	if closed {
		return // a preview queued before the close must not undo its mark
	}
	r.writeComment(ctx, repo, pr, body, true)
}

// PreviewClosed edits the plan comment of a closed or merged pull request,
// once, to say so; later previews of it leave the comment alone until it
// is reopened (Preview). A pull request without our comment gets none.
func (r *Reconciler) PreviewClosed(ctx context.Context, tenant, repoID string, pr int, merged bool) error {
	repo, err := r.store.GetRepository(ctx, tenant, repoID)
	if err != nil {
		return fmt.Errorf("close preview %s#%d: %w", repoID, pr, err)
	}
	r.mu.Lock()
	if r.closedPRs == nil || len(r.closedPRs) >= 4096 {
		// Bound memory: forgetting costs at most a late edit by a preview
		// queued before the close.
		r.closedPRs = map[string]bool{}
	}
	r.closedPRs[prKey(repoID, pr)] = true
	r.mu.Unlock()
	r.writeComment(ctx, repo, pr, closedComment(pr, merged), false)
	return nil
}

var _ webhooks.ClosedSink = (*Reconciler)(nil)

func prKey(repoID string, pr int) string { return repoID + "#" + strconv.Itoa(pr) }

func (r *Reconciler) writeComment(ctx context.Context, repo store.Repository, pr int, body string, create bool) {
	if _, err := r.reportersFor(ctx, repo); err != nil {
		r.log.Error("comment writers", "repo", repo.ID, "err", err)
		return
	}
	r.mu.Lock()
	rr := r.reporters[repo.ID]
	r.mu.Unlock()
	if rr == nil {
		return
	}
	for _, cr := range rr.comments {
		if create {
			cr.Report(pr, body)
		} else {
			cr.ReportEdit(pr, body)
		}
	}
}

// previewURL links to the stored preview of a pull request on the
// control plane; empty without a public URL.
func (r *Reconciler) previewURL(repo store.Repository, pr int) string {
	if r.opts.PublicURL == "" {
		return ""
	}
	return strings.TrimRight(r.opts.PublicURL, "/") + "/v1/repos/" + repo.ID + "/previews/" + strconv.Itoa(pr)
}

// writersFromRepo builds the writer the repository's forge settings name.
func (r *Reconciler) writersFromRepo(ctx context.Context, repo store.Repository) ([]forge.Writer, error) {
	var tok forge.Token
	if repo.ForgeCredentialsRef != "" && repo.ForgeKind != store.ForgeGitNotes && repo.ForgeKind != store.ForgeNone {
		t, err := r.forgeToken(ctx, repo)
		if err != nil {
			return nil, err
		}
		tok = t
	}
	owner, name, _ := strings.Cut(repo.ForgeProject, "/")
	var w forge.Writer
	var err error
	switch repo.ForgeKind {
	case store.ForgeNone:
		return nil, nil
	case store.ForgeGitHub:
		w, err = forge.NewGitHub(forge.GitHubOptions{BaseURL: repo.ForgeAPIURL, Owner: owner, Repo: name, Token: tok, Client: r.forgeClient()})
	case store.ForgeGitea:
		w, err = forge.NewGitea(forge.GitHubOptions{BaseURL: repo.ForgeAPIURL, Owner: owner, Repo: name, Token: tok, Client: r.forgeClient()})
	case store.ForgeGitLab:
		w, err = forge.NewGitLab(forge.GitLabOptions{BaseURL: repo.ForgeAPIURL, Project: repo.ForgeProject, Token: tok, Client: r.forgeClient()})
	case store.ForgeGitNotes:
		auth, aerr := r.auth(ctx, repo.Tenant, repo.URL, repo.CredentialsRef)
		if aerr != nil {
			return nil, aerr
		}
		w, err = forge.NewNotes(forge.NotesOptions{Dir: filepath.Join(r.opts.DataDir, "notes", repo.ID+".git"), RemoteURL: repo.URL,
			Auth: r.git.SSHAuth(auth), LocalSources: r.local, Egress: r.git})
	default:
		return nil, fmt.Errorf("unknown forge kind %q", repo.ForgeKind)
	}
	if err != nil {
		return nil, err
	}
	return []forge.Writer{w}, nil
}

// forgeToken resolves the status-posting token of repo through the store
// by the repository's tenant, bound to the host of the forge API it is
// about to be sent to.
func (r *Reconciler) forgeToken(ctx context.Context, repo store.Repository) (forge.Token, error) {
	target := forge.APIBase(string(repo.ForgeKind), repo.ForgeAPIURL)
	cred, sec, err := r.credential(ctx, repo.Tenant, repo.ForgeCredentialsRef, target)
	if err != nil {
		return forge.Token{}, err
	}
	if cred.Kind != store.CredentialToken {
		return forge.Token{}, fmt.Errorf("credential %q: a forge API needs a token credential, not %s: %w", cred.Name, cred.Kind, store.ErrCredentialUse)
	}
	return forge.NewToken(sec.Reveal()), nil
}

// credentialStamps names the version of each credential the writers were
// built with (its last update, or its absence), so a rotated or deleted
// credential rebuilds them, and the check of tenant, host and transport
// runs again, rather than the old secret living on in a writer.
func (r *Reconciler) credentialStamps(ctx context.Context, repo store.Repository) string {
	var b strings.Builder
	for _, ref := range []string{repo.CredentialsRef, repo.ForgeCredentialsRef} {
		b.WriteString("\x00")
		if ref == "" {
			continue
		}
		c, err := r.store.GetCredential(ctx, repo.Tenant, ref)
		if err != nil {
			b.WriteString("!")
			continue
		}
		b.WriteString(c.UpdatedAt.Format(time.RFC3339Nano))
	}
	return b.String()
}

// forgeClient is the HTTP client of the forge status APIs: every address
// it dials, redirects included, passes the egress policy.
func (r *Reconciler) forgeClient() *http.Client {
	return r.opts.Egress.HTTPClient(forgeTimeout)
}

// forgeTimeout bounds one status API request (the writers' own default).
const forgeTimeout = 30 * time.Second
