package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nkudo/nkudo/diff"
)

// DiffCmd previews, offline, the plans the control plane would make for a
// manifest directory against the inventory in a file.
type DiffCmd struct {
	Dir    string   `arg:"" optional:"" default:"." help:"Manifest directory (default: the current directory)."`
	Actual string   `placeholder:"FILE" help:"Inventory JSON file of the sites (see docs/inventory-format.md); - reads standard input. Without it: the live inventory from the control plane (--server, NKUDO_SERVER or nkudoctl login)."`
	Site   []string `placeholder:"SITE" help:"Only plan these sites (repeatable)."`
	Tenant string   `help:"Tenant name, part of every action and plan ID (default: the logged-in tenant against the live fleet, so the IDs match the plans the control plane stores; \"default\" with --actual)."`
	Commit string   `help:"Commit to record in the plans."`
	Color  string   `enum:"auto,always,never" default:"auto" help:"Colour the table output: ${enum}. auto = only on a terminal and without NO_COLOR."`
}

// Help is the long help text.
func (c *DiffCmd) Help() string {
	return `Loads and validates the manifests under DIR, reads the sites' inventory
from --actual (or, without it, from the control plane) and prints one plan per site: a line per action with its
symbol (+ create, - delete, -/+ replace, ~ resize, > start, ■ stop), the
fields that change, destructive actions called out, a "~ netbird groups +a -b"
line where a Site's NetBird groups differ from those in the inventory
(the control plane sets them; no action is planned), unmanaged VMs listed,
a summary per site and a total. A site that is not in the inventory file is
treated as never reported by its agent.

Exit status (as kubectl diff and flux diff):
  0  no changes: every site is converged
  1  changes: at least one site has actions, NetBird group changes, a
     name conflict with an unmanaged VM, or a plan refused by prune safety
     (the refusal and its reason are printed; nothing of a refused site
     would be applied)
  2  error: invalid manifests (printed on stderr), unreadable inventory,
     bad flags`
}

// Run plans c.Dir against c.Actual.
func (c *DiffCmd) Run(ctx context.Context, g *Globals, s *Streams) error {
	desired, errs, err := loadDir(c.Dir)
	if err != nil {
		return err
	}
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(s.Err, e.Error())
		}
		return fmt.Errorf("%s: %s: cannot plan invalid manifests", c.Dir, plural(len(errs), "error"))
	}
	var actual observed
	if c.Actual == "" {
		actual, err = liveInventory(ctx, g)
	} else {
		actual, err = readInventoryFile(s.In, c.Actual)
	}
	if err != nil {
		return err
	}
	tenant := c.Tenant
	if tenant == "" {
		tenant = actual.tenant
	}
	if tenant == "" {
		tenant = "default"
	}
	res := diff.Plan(desired, actual.inv, diff.Options{Tenant: tenant, Commit: c.Commit, Sites: c.Site, NetBirdGroups: actual.groups})
	return renderPlan(s, g.Output, c.Color, res)
}

// renderPlan prints res as diff does (text with colour as asked, or
// JSON) and returns diff's exit status: exitChanges when a site changes.
func renderPlan(s *Streams, output, colorFlag string, res diff.Result) error {
	var err error
	if output == "json" {
		err = diff.RenderJSON(s.Out, res)
	} else {
		color := s.Color
		switch colorFlag {
		case "always":
			color = true
		case "never":
			color = false
		}
		err = diff.RenderText(s.Out, res, diff.RenderOptions{Color: color})
	}
	if err != nil {
		return err
	}
	if hasChanges(res) {
		return exitStatus(exitChanges)
	}
	return nil
}

// hasChanges reports whether any site differs from its desired state.
func hasChanges(r diff.Result) bool {
	for _, s := range r.Sites {
		if s.Changed() {
			return true
		}
	}
	return false
}

// readInventoryFile reads the inventory file name, or stdin when name is "-".
func readInventoryFile(stdin io.Reader, name string) (observed, error) {
	if name == "-" {
		if stdin == nil {
			return observed{}, errors.New("inventory: --actual -: no standard input")
		}
		inv, err := parseInventory(stdin)
		if err != nil {
			return observed{}, fmt.Errorf("inventory from standard input: %w", err)
		}
		return inv, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return observed{}, fmt.Errorf("inventory: %w", err)
	}
	defer f.Close()
	inv, err := parseInventory(f)
	if err != nil {
		return observed{}, fmt.Errorf("inventory %s: %w", name, err)
	}
	return inv, nil
}
