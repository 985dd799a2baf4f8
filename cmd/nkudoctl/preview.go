package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/diff"
)

// PreviewCmd shows the stored plan preview of a pull request, or lists
// the open ones.
type PreviewCmd struct {
	PR    int    `arg:"" optional:"" help:"Pull request (merge request IID) whose preview to show."`
	List  bool   `help:"List the pull requests with a stored preview and their state, instead of showing one."`
	All   bool   `help:"With --list: closed and merged pull requests too."`
	Repo  string `placeholder:"REPO" help:"Repository ID or name (default: the tenant's only repository)."`
	Color string `enum:"auto,always,never" default:"auto" help:"Colour the table output: ${enum}. auto = only on a terminal and without NO_COLOR."`
}

// Help is the long help text.
func (c *PreviewCmd) Help() string {
	return `Prints the plan the control plane computed for a pull request's head
against the sites' latest reported inventories, exactly as nkudoctl diff
prints a plan (-o json: the same JSON). The preview is the one the pull
request's comment shows; it is refreshed when the head, a site's inventory
or the branch moves.

--list lists the pull requests with a preview: number, state (open,
closed, merged), head commit, when it was computed and its summary.

Exit status (as nkudoctl diff):
  0  no changes: every site is converged (or --list)
  1  changes: at least one site has actions, or a plan refused
  2  error: the head is invalid (its errors printed on stderr), no preview,
     bad flags, the control plane unreachable`
}

// Run shows or lists.
func (c *PreviewCmd) Run(ctx context.Context, g *Globals, s *Streams) error {
	if c.List == (c.PR > 0) {
		return errors.New("pass a pull request number or --list (one of them)")
	}
	if c.All && !c.List {
		return errors.New("--all goes with --list")
	}
	client, err := connect(g)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	repo, err := pickRepo(ctx, client, c.Repo)
	if err != nil {
		return err
	}
	if c.List {
		return c.list(ctx, g, s, client, repo)
	}
	p, err := client.GetPreview(ctx, repo.ID, c.PR)
	if err != nil {
		return fmt.Errorf("preview of pull request %d of %s: %w", c.PR, repo.Name, err)
	}
	if len(p.PlanJSON) == 0 {
		// Not planned: an invalid or unverified head. Its errors go where
		// diff prints invalid manifests' errors.
		fmt.Fprint(s.Err, p.PlanText)
		return fmt.Errorf("pull request %d head %s was not planned: %s", c.PR, shortSHA(p.Commit), p.Summary)
	}
	var stored struct {
		Sites []diff.SiteResult `json:"sites"`
	}
	if err := json.Unmarshal(p.PlanJSON, &stored); err != nil {
		return fmt.Errorf("preview of pull request %d: plan JSON: %w", c.PR, err)
	}
	res := diff.Result{Sites: stored.Sites}
	return renderPlan(s, g.Output, c.Color, res)
}

// previewRow is one pull request in preview --list.
type previewRow struct {
	PR          int              `json:"pr"`
	State       string           `json:"state"`
	Commit      string           `json:"commit"`
	Summary     string           `json:"summary"`
	CreatedAt   string           `json:"createdAt"`
	Base        string           `json:"base,omitempty"`
	Inventories map[string]int64 `json:"inventories,omitempty"`
}

func (c *PreviewCmd) list(ctx context.Context, g *Globals, s *Streams, client *api.Client, repo api.Repository) error {
	ps, err := client.ListPreviews(ctx, repo.ID)
	if err != nil {
		return fmt.Errorf("previews of %s: %w", repo.Name, err)
	}
	seen := map[int]bool{}
	rows := []previewRow{}
	for _, p := range ps { // newest first: the first of a pull request is its latest
		if seen[p.PR] {
			continue
		}
		seen[p.PR] = true
		if p.State == "" {
			p.State = api.PreviewOpen
		}
		if !c.All && p.State != api.PreviewOpen {
			continue
		}
		rows = append(rows, previewRow{PR: p.PR, State: string(p.State), Commit: p.Commit, Summary: p.Summary,
			CreatedAt: p.CreatedAt.UTC().Format("2006-01-02 15:04:05Z07:00"), Base: p.Base, Inventories: p.Inventories})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].PR < rows[j].PR })
	if g.Output == "json" {
		return writeJSON(s, rows)
	}
	if len(rows) == 0 {
		fmt.Fprintln(s.Out, "no open pull request has a preview")
		return nil
	}
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PR\tSTATE\tHEAD\tCOMPUTED\tSUMMARY")
	for _, r := range rows {
		fmt.Fprintf(w, "#%d\t%s\t%s\t%s\t%s\n", r.PR, r.State, shortSHA(r.Commit), r.CreatedAt, strings.ReplaceAll(r.Summary, "\n", " "))
	}
	w.Flush()
	_, err = s.Out.Write(b.Bytes())
	return err
}
