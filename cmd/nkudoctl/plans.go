package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/nkudo/nkudo/api"
)

// PlansCmd lists plans, newest first.
type PlansCmd struct {
	Site   string `placeholder:"SITE" help:"Only this site's plans."`
	Commit string `placeholder:"SHA" help:"Only plans of this commit (or a unique prefix of at least 4 hex digits)."`
	Repo   string `placeholder:"REPO" help:"Only plans of this repository (ID)."`
	Status string `enum:",pending,in_progress,succeeded,failed,superseded" default:"" help:"Only plans in this status."`
	Limit  int    `default:"50" help:"At most this many plans."`
}

// Run lists plans.
func (c *PlansCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	plans, err := client.ListPlans(ctx, api.PlanFilter{Site: c.Site, Commit: c.Commit, RepoID: c.Repo, Status: c.Status, Limit: c.Limit})
	if err != nil {
		return fmt.Errorf("list plans: %w", err)
	}
	if g.Output == "json" {
		return writeJSON(s, plans)
	}
	w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PLAN\tSITE\tSTATUS\tCOMMIT\tCREATED")
	for _, p := range plans {
		commit := shortSHA(p.Plan.Commit)
		if commit == "" {
			commit = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", shortSHA(p.Plan.ID), p.Plan.Site, p.Status, commit, p.CreatedAt.Local().Format("2006-01-02 15:04:05"))
	}
	return w.Flush()
}
