package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/nkudo/nkudo/api"
)

// VMsCmd shows desired and actual VMs per site.
type VMsCmd struct {
	Site []string `arg:"" optional:"" placeholder:"SITE" help:"Sites to show (default: every site)."`
}

// Run lists VMs.
func (c *VMsCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	sites := c.Site
	if len(sites) == 0 {
		list, err := client.ListSites(ctx)
		if err != nil {
			return fmt.Errorf("list sites: %w", err)
		}
		for _, st := range list {
			sites = append(sites, st.Name)
		}
	}
	var all []api.SiteVMs
	for _, name := range sites {
		v, err := client.SiteVMs(ctx, name)
		if err != nil {
			return fmt.Errorf("VMs of %s: %w", name, err)
		}
		all = append(all, v)
	}
	if g.Output == "json" {
		return writeJSON(s, all)
	}
	w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SITE\tVM\tDESIRED\tACTUAL\tMANAGED\tIN SYNC")
	for _, sv := range all {
		for _, vm := range sv.VMs {
			desired, actual, managed, sync := "-", "-", "-", "no"
			if !sv.DesiredKnown {
				desired = "?"
			} else if vm.Desired != nil {
				desired = string(vm.Desired.State)
			}
			if vm.Actual != nil {
				actual = string(vm.Actual.State)
				managed = "no"
				if vm.Actual.Managed {
					managed = "yes"
				}
			}
			if vm.InSync {
				sync = "yes"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", sv.Site, vm.Name, desired, actual, managed, sync)
		}
	}
	return w.Flush()
}
