package ui

import (
	"slices"
	"strconv"
	"time"
)

// Paths of the repository and audit pages.
const (
	PathRepos         = "/ui/repos"
	PathRepo          = "/ui/repos/{repo}"
	PathRepoReconcile = "/ui/repos/{repo}/reconcile"
	PathAudit         = "/ui/audit"
	PathFleetEvents   = "/ui/fleet/events"
	PathSignInCode    = "/ui/signin/code" // ?code=: a one-time sign-in link
)

// StatusContexts are the commit status contexts a commit row shows, in
// the order the pipeline sets them.
var StatusContexts = []string{"nkudo/validate", "nkudo/plan", "nkudo/apply"}

// RepoRow is one repository on the repositories page.
type RepoRow struct {
	ID, Name, URL, Branch, Path string
	Suspended                   bool
	LastSeenCommit              string
	LastSeenAt                  time.Time
	LastAppliedCommit           string
	LastAppliedAt               time.Time
	LastError                   string
	LastErrorAt                 time.Time
}

// ReposPage lists the tenant's repositories.
type ReposPage struct {
	Layout
	Repos []RepoRow
	Now   time.Time
}

// CommitStatus is one status context of a commit.
type CommitStatus struct {
	Commit      string
	Context     string
	State       string
	Description string
	TargetURL   string
	UpdatedAt   time.Time
}

// CommitRow is one commit with its statuses by context.
type CommitRow struct {
	Commit    string
	UpdatedAt time.Time // the newest of its statuses
	Statuses  map[string]CommitStatus
	// Applied marks the commit in force (the last valid one).
	Applied bool
}

// Status returns the commit's status of context ctx (zero when none).
func (c CommitRow) Status(ctx string) CommitStatus { return c.Statuses[ctx] }

// Preview is an open pull request's preview, rendered like nkudoctl diff.
type Preview struct {
	PR        int
	Commit    string
	Summary   string
	Text      string
	CreatedAt time.Time
}

// RepoPage is one repository: its state, recent commits with their
// statuses, the last error, and pull-request previews.
type RepoPage struct {
	Layout
	Repo     RepoRow
	Commits  []CommitRow
	Previews []Preview
	// CanReconcile shows the "reconcile now" form (the server has a
	// reconciler; every session of the tenant may trigger it, as its
	// token may through the API).
	CanReconcile bool
	// Notice is a one-line outcome of a reconcile request.
	Notice string
	Now    time.Time
}

// GroupCommits folds statuses (newest first) into commit rows, newest
// first, at most max commits.
func GroupCommits(sts []CommitStatus, max int) []CommitRow {
	var rows []CommitRow
	idx := map[string]int{}
	for _, st := range sts {
		c := st.Commit
		j, ok := idx[c]
		if !ok {
			if len(rows) == max {
				continue
			}
			j = len(rows)
			idx[c] = j
			rows = append(rows, CommitRow{Commit: c, UpdatedAt: st.UpdatedAt, Statuses: map[string]CommitStatus{}})
		}
		if _, seen := rows[j].Statuses[st.Context]; !seen {
			rows[j].Statuses[st.Context] = st
		}
	}
	slices.SortStableFunc(rows, func(a, b CommitRow) int { return b.UpdatedAt.Compare(a.UpdatedAt) })
	return rows
}

// AuditRow is one audit event.
type AuditRow struct {
	Seq    int64
	Time   time.Time
	Tenant string
	Actor  string
	Action string
	Object string
	Detail string
}

// AuditPage is a page of the audit log and the chain's verification.
type AuditPage struct {
	Layout
	Events []AuditRow
	// All shows every tenant's events (and installation-wide ones), not
	// only the session's tenant's.
	All bool
	// After is the page's start (events with a greater Seq); Next is the
	// next page's, 0 when this page is the last.
	After, Next int64
	// Verification of the whole chain.
	ChainOK     bool
	Checked     int64
	FirstBroken int64
	Reason      string
	KeyedFrom   int64
	KeyChecked  bool
	HeadHash    string
}

// PageLink is the audit URL of the page starting after seq.
func (p AuditPage) PageLink(after int64) string {
	u := PathAudit + "?after=" + strconv.FormatInt(after, 10)
	if p.All {
		u += "&scope=all"
	}
	return u
}
