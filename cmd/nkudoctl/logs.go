package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nkudo/nkudo/api"
)

// LogsCmd prints a plan's execution log.
type LogsCmd struct {
	Plan   string `arg:"" placeholder:"PLAN" help:"Plan ID (a unique prefix of at least 8 characters is enough)."`
	Follow bool   `short:"f" help:"Keep printing new lines until the plan finishes."`
}

// Run prints the log.
func (c *LogsCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	id, err := resolvePlanID(ctx, client, c.Plan)
	if err != nil {
		return err
	}
	print := func(l api.LogLine) error {
		if g.Output == "json" {
			return writeJSON(s, l)
		}
		action := ""
		if l.ActionID != "" {
			action = " " + shortSHA(l.ActionID)
		}
		_, err := fmt.Fprintf(s.Out, "%s %-6s%s %s\n", l.Time.Local().Format("15:04:05.000"), l.Stream, action, l.Line)
		return err
	}
	if c.Follow {
		err := client.FollowLogs(ctx, id, 0, print)
		if errors.Is(err, context.Canceled) {
			return nil // interrupted by the user
		}
		return err
	}
	// Pages are bounded in bytes by the server; follow the cursor it gives.
	var after int64
	for {
		page, err := client.Logs(ctx, id, after)
		if err != nil {
			return fmt.Errorf("logs of %s: %w", shortSHA(id), err)
		}
		for _, l := range page.Lines {
			if err := print(l); err != nil {
				return err
			}
		}
		if page.Next == 0 {
			return printDropped(g, s, page.Dropped)
		}
		if page.Next <= after {
			return fmt.Errorf("logs of %s: the server's cursor %d does not move past %d", shortSHA(id), page.Next, after)
		}
		after = page.Next
	}
}

// printDropped says, after the last line, that the server stopped storing
// the plan's log at a quota (in JSON output, as a final {"dropped": …}).
func printDropped(g *Globals, s *Streams, d *api.LogDropped) error {
	if d == nil {
		return nil
	}
	if g.Output == "json" {
		return writeJSON(s, map[string]*api.LogDropped{"dropped": d})
	}
	_, err := fmt.Fprintf(s.Out, "… %d more lines (%d bytes) were dropped: the %s log quota was reached\n", d.Lines, d.Bytes, d.Quota)
	return err
}

// resolvePlanID expands a unique prefix to a full plan ID.
func resolvePlanID(ctx context.Context, c *api.Client, prefix string) (string, error) {
	if len(prefix) == 64 {
		return prefix, nil
	}
	if len(prefix) < 8 {
		return "", fmt.Errorf("plan %q: give at least 8 characters of the ID", prefix)
	}
	plans, err := c.ListPlans(ctx, api.PlanFilter{Limit: 1000})
	if err != nil {
		return "", fmt.Errorf("list plans: %w", err)
	}
	var found []string
	for _, p := range plans {
		if strings.HasPrefix(p.Plan.ID, prefix) {
			found = append(found, p.Plan.ID)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("no plan %s among the newest 1000", prefix)
	}
	return "", fmt.Errorf("plan prefix %s is ambiguous (%d plans)", prefix, len(found))
}
