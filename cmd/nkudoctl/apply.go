package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nkudo/nkudo/api"
)

// ApplyCmd triggers a reconcile and optionally follows it to the end.
type ApplyCmd struct {
	Repo    string        `placeholder:"REPO" help:"Repository ID or name (default: the tenant's only repository)."`
	Ref     string        `placeholder:"REF" help:"Branch or commit to reconcile now (default: the repository's branch head). Polling returns to the tracked branch head at its next round."`
	DryRun  bool          `name:"dry-run" help:"Show what would be reconciled and what is still in flight; trigger nothing."`
	Wait    bool          `help:"Follow every site until the commit has converged or failed."`
	Timeout time.Duration `default:"10m" help:"Give up waiting after this long."`
}

// Help is the long help text.
func (c *ApplyCmd) Help() string {
	return `Asks the control plane to reconcile the repository now (at the branch head,
or --ref), waits for the commit's validation and plan, and prints them. With
--wait it then follows each site (a live table on a terminal, one line per
change otherwise) until nkudo/apply is success or failure.

Exit status: 0 applied (or, without --wait, planned); 1 the commit is
invalid, its plan was refused, or a site failed; 2 errors and timeouts.`
}

// Run triggers and follows.
func (c *ApplyCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	repo, err := pickRepo(ctx, client, c.Repo)
	if err != nil {
		return err
	}
	if c.DryRun {
		d, err := c.dryRun(ctx, client, repo)
		if err != nil {
			return err
		}
		if g.Output == "json" {
			return writeJSON(s, d)
		}
		return d.print(s)
	}
	if g.Output != "json" {
		_, err := c.apply(ctx, client, repo, s)
		return err
	}
	// -o json: the progress lines are not printed; the commit's final
	// report (statuses and each site's plan) is, whatever the outcome.
	quiet := *s
	quiet.Out, quiet.Color = io.Discard, false
	commit, err := c.apply(ctx, client, repo, &quiet)
	if commit == "" {
		return err
	}
	rep, rerr := report(ctx, client, repo, commit)
	if rerr != nil {
		return errors.Join(err, rerr)
	}
	if werr := writeJSON(s, rep); werr != nil {
		return werr
	}
	return err
}

// apply triggers the reconcile and follows it, printing progress to s; it
// returns the commit once known.
func (c *ApplyCmd) apply(ctx context.Context, client *api.Client, repo api.Repository, s *Streams) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	before := repo.LastSeenCommit
	res, err := client.Reconcile(ctx, repo.ID, c.Ref)
	if err != nil {
		return "", fmt.Errorf("trigger reconcile: %w", err)
	}
	if !res.Queued && res.Commit == "" {
		return "", fmt.Errorf("reconcile not started: %s", res.Message)
	}
	fmt.Fprintf(s.Out, "reconcile of %s queued\n", repo.Name)
	commit, err := c.commit(ctx, client, repo, before, res)
	if err != nil {
		return "", c.timeout(err)
	}
	fmt.Fprintf(s.Out, "commit %s\n", commit)

	// Validation and plan come first.
	for _, name := range []string{"nkudo/validate", "nkudo/plan"} {
		st, err := waitStatus(ctx, client, repo.ID, commit, name, func(api.CommitStatus) bool { return true })
		if err != nil {
			return commit, c.timeout(err)
		}
		fmt.Fprintf(s.Out, "%-15s %-8s %s\n", name, st.State, st.Description)
		if st.State == "failure" || st.State == "error" {
			return commit, exitStatus(exitChanges)
		}
	}
	rep, err := report(ctx, client, repo, commit)
	if err != nil {
		return commit, err
	}
	for _, p := range rep.Sites {
		fmt.Fprintf(s.Out, "  %s: plan %s %s\n", p.Site, shortSHA(p.Plan), p.Status)
	}
	if !c.Wait {
		return commit, nil
	}
	return commit, c.follow(ctx, client, repo, commit, s)
}

// commit finds the commit the reconcile is about: the ref itself when it is
// a hash, else the branch head the control plane fetched.
func (c *ApplyCmd) commit(ctx context.Context, client *api.Client, repo api.Repository, before string, res api.TriggerResult) (string, error) {
	if res.Commit != "" {
		return res.Commit, nil
	}
	if len(c.Ref) == 40 && strings.Trim(c.Ref, "0123456789abcdef") == "" {
		return c.Ref, nil
	}
	// The fetch moves lastSeenCommit when the branch moved; when it did not
	// move within a few seconds, the head is the commit already seen.
	grace := time.Now().Add(3 * time.Second)
	for {
		r, err := client.GetRepo(ctx, repo.ID)
		if err != nil {
			return "", fmt.Errorf("repository: %w", err)
		}
		if r.LastSeenCommit != "" && (r.LastSeenCommit != before || time.Now().After(grace)) {
			return r.LastSeenCommit, nil
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return "", err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitStatus polls until the commit has the named status and ok accepts it.
func waitStatus(ctx context.Context, client *api.Client, repoID, commit, name string, ok func(api.CommitStatus) bool) (api.CommitStatus, error) {
	for {
		sts, err := client.CommitStatuses(ctx, repoID, commit)
		if err != nil && ctx.Err() == nil {
			return api.CommitStatus{}, fmt.Errorf("statuses: %w", err)
		}
		for _, st := range sts {
			if st.Context == name && ok(st) {
				return st, nil
			}
			// An invalid commit never gets a plan: stop waiting for one.
			if name != "nkudo/validate" && st.Context == "nkudo/validate" && st.State != "success" && st.State != "pending" {
				return st, nil
			}
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return api.CommitStatus{}, err
		}
	}
}

func (c *ApplyCmd) timeout(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("timed out after %s", c.Timeout)
	}
	return err
}

// follow shows each site's progress until nkudo/apply is final.
func (c *ApplyCmd) follow(ctx context.Context, client *api.Client, repo api.Repository, commit string, s *Streams) error {
	last := map[string]string{}
	drawn := 0
	for {
		rep, err := report(ctx, client, repo, commit)
		if err != nil {
			return c.timeout(err)
		}
		apply := ""
		var desc string
		for _, st := range rep.Statuses {
			if st.Context == "nkudo/apply" {
				apply, desc = st.State, st.Description
			}
		}
		if s.Color { // a terminal: redraw one line per site in place
			if drawn > 0 {
				fmt.Fprintf(s.Out, "\x1b[%dA", drawn)
			}
			lines := liveLines(rep, apply, desc)
			for _, l := range lines {
				fmt.Fprintf(s.Out, "\x1b[K%s\n", l)
			}
			drawn = len(lines)
		} else {
			for _, p := range rep.Sites {
				if last[p.Site] != p.Status {
					last[p.Site] = p.Status
					fmt.Fprintf(s.Out, "%s %s\n", p.Site, p.Status)
				}
			}
		}
		switch apply {
		case "success":
			if !s.Color {
				fmt.Fprintf(s.Out, "nkudo/apply success: %s\n", desc)
			}
			return nil
		case "failure", "error":
			if !s.Color {
				fmt.Fprintf(s.Out, "nkudo/apply %s: %s\n", apply, desc)
			}
			return exitStatus(exitChanges)
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return c.timeout(err)
		}
	}
}

// liveLines is the live table: one line per site, then nkudo/apply.
func liveLines(rep commitReport, apply, desc string) []string {
	lines := make([]string, 0, len(rep.Sites)+1)
	for _, p := range rep.Sites {
		lines = append(lines, fmt.Sprintf("  %-24s %s", p.Site, progressWord(p.Status, apply)))
	}
	return append(lines, fmt.Sprintf("  nkudo/apply: %s %s", apply, desc))
}

// progressWord says where a site's plan is. A plan that succeeded is
// "converged" only once nkudo/apply is success: until then (the control
// plane has not checked it yet, or the agent skipped it as stale and the
// site is re-planned) the table claims no more than the plan's status.
func progressWord(status, apply string) string {
	switch status {
	case "pending":
		return "waiting for the agent"
	case "in_progress":
		return "applying…"
	case "succeeded":
		if apply != "success" {
			return "plan succeeded"
		}
		return "converged ✓"
	case "failed":
		return "failed ✗"
	case "superseded":
		return "superseded"
	}
	return status
}

// dryRunReport is what apply --dry-run shows (-o json prints it as is).
type dryRunReport struct {
	Repo       string     `json:"repo"`
	URL        string     `json:"url"`
	Ref        string     `json:"ref"`
	DesiredNow string     `json:"desiredNow,omitempty"`
	Suspended  bool       `json:"suspended"`
	InFlight   []inFlight `json:"inFlight"`
}

type inFlight struct {
	Site   string `json:"site"`
	Plan   string `json:"plan"`
	Status string `json:"status"`
	Commit string `json:"commit"`
}

// dryRun gathers what a reconcile would start from, and what is in flight.
func (c *ApplyCmd) dryRun(ctx context.Context, client *api.Client, repo api.Repository) (dryRunReport, error) {
	d := dryRunReport{Repo: repo.Name, URL: repo.URL, Ref: c.Ref, DesiredNow: repo.LastAppliedCommit, Suspended: repo.Suspended, InFlight: []inFlight{}}
	if d.Ref == "" {
		d.Ref = repo.Branch
	}
	for _, status := range []string{"pending", "in_progress"} {
		plans, err := client.ListPlans(ctx, api.PlanFilter{RepoID: repo.ID, Status: status, Limit: 1000})
		if err != nil {
			return d, fmt.Errorf("list plans: %w", err)
		}
		for _, p := range plans {
			d.InFlight = append(d.InFlight, inFlight{Site: p.Plan.Site, Plan: p.Plan.ID, Status: status, Commit: p.Plan.Commit})
		}
	}
	return d, nil
}

func (d dryRunReport) print(s *Streams) error {
	ref := d.Ref
	if ref == "" {
		ref = "the default branch"
	}
	fmt.Fprintf(s.Out, "would reconcile %s (%s) at %s\n", d.Repo, d.URL, ref)
	if d.DesiredNow != "" {
		fmt.Fprintf(s.Out, "desired now: %s\n", d.DesiredNow)
	}
	if d.Suspended {
		fmt.Fprintln(s.Out, "the repository is suspended: nothing would be reconciled")
	}
	for _, f := range d.InFlight {
		fmt.Fprintf(s.Out, "in flight: %s plan %s (%s) of %s\n", f.Site, shortSHA(f.Plan), f.Status, shortSHA(f.Commit))
	}
	_, err := fmt.Fprintln(s.Out, "for the full plan of a working tree, run: nkudoctl diff DIR")
	return err
}
