package main

import (
	"context"
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/nkudo/nkudo/api"
)

// StatusCmd shows a commit's statuses and each site's convergence.
type StatusCmd struct {
	SHA  string `arg:"" optional:"" placeholder:"SHA" help:"Commit, or any unique prefix of at least 4 hex digits such as the 12 the CLI prints (default: the newest commit seen on the branch)."`
	Repo string `placeholder:"REPO" help:"Repository ID or name (default: the tenant's only repository)."`
}

// Help is the long help text.
func (c *StatusCmd) Help() string {
	return `Prints nkudo/validate, nkudo/plan and nkudo/apply of the commit as the
control plane holds them (with whether the forge has them yet), then the plan
of each site for that commit and its status.

Exit status: 0 when nkudo/apply is success, 1 when a status failed, 3 while
the commit is still pending, 2 on errors.`
}

type commitReport struct {
	Repo     string             `json:"repo"`
	Commit   string             `json:"commit"`
	Statuses []api.CommitStatus `json:"statuses"`
	Sites    []siteProgress     `json:"sites"`
}

type siteProgress struct {
	Site   string `json:"site"`
	Plan   string `json:"plan"`
	Status string `json:"status"`
}

// exitPending: status of a commit that has not finished.
const exitPending = 3

// Run prints the report.
func (c *StatusCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	repo, err := pickRepo(ctx, client, c.Repo)
	if err != nil {
		return err
	}
	sha := c.SHA
	if sha == "" {
		sha = repo.LastSeenCommit
	}
	if sha == "" {
		return fmt.Errorf("repository %s has not been fetched yet", repo.Name)
	}
	rep, err := report(ctx, client, repo, sha)
	if err != nil {
		return err
	}
	if g.Output == "json" {
		if err := writeJSON(s, rep); err != nil {
			return err
		}
	} else if err := printReport(s, rep); err != nil {
		return err
	}
	return exitFor(rep.Statuses)
}

func report(ctx context.Context, client *api.Client, repo api.Repository, sha string) (commitReport, error) {
	sts, err := client.CommitStatuses(ctx, repo.ID, sha)
	if err != nil {
		return commitReport{}, fmt.Errorf("statuses of %s: %w", shortSHA(sha), err)
	}
	if len(sts) > 0 {
		sha = sts[0].Commit // the full SHA of a prefix the server resolved
	}
	plans, err := client.ListPlans(ctx, api.PlanFilter{Commit: sha, RepoID: repo.ID, Limit: 10000})
	if err != nil {
		return commitReport{}, fmt.Errorf("plans of %s: %w", shortSHA(sha), err)
	}
	rep := commitReport{Repo: repo.Name, Commit: sha, Statuses: sts}
	seen := map[string]bool{}
	for _, p := range plans { // newest first: the first per site is current
		if seen[p.Plan.Site] {
			continue
		}
		seen[p.Plan.Site] = true
		rep.Sites = append(rep.Sites, siteProgress{Site: p.Plan.Site, Plan: p.Plan.ID, Status: string(p.Status)})
	}
	sort.Slice(rep.Sites, func(i, j int) bool { return rep.Sites[i].Site < rep.Sites[j].Site })
	return rep, nil
}

func printReport(s *Streams, rep commitReport) error {
	fmt.Fprintf(s.Out, "%s @ %s\n\n", rep.Repo, rep.Commit)
	w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CONTEXT\tSTATE\tON FORGE\tDESCRIPTION")
	for _, st := range rep.Statuses {
		posted := "no"
		if st.Posted {
			posted = "yes"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", st.Context, st.State, posted, st.Description)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(rep.Sites) == 0 {
		fmt.Fprintln(s.Out, "\nno plans for this commit")
		return nil
	}
	fmt.Fprintln(s.Out)
	w = tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SITE\tPLAN\tSTATUS")
	for _, p := range rep.Sites {
		fmt.Fprintf(w, "%s\t%s\t%s\n", p.Site, shortSHA(p.Plan), p.Status)
	}
	return w.Flush()
}

// exitFor maps statuses to the exit status: 0 applied, 1 failed, 3 pending.
func exitFor(sts []api.CommitStatus) error {
	state := map[string]string{}
	for _, st := range sts {
		state[st.Context] = st.State
	}
	for _, ctx := range []string{"nkudo/validate", "nkudo/plan", "nkudo/apply"} {
		if v := state[ctx]; v == "failure" || v == "error" {
			return exitStatus(exitChanges)
		}
	}
	if state["nkudo/apply"] == "success" {
		return nil
	}
	return exitStatus(exitPending)
}
