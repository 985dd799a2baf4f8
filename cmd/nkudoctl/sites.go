package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/nkudo/nkudo/api"
)

// SitesCmd groups the site commands; without a subcommand it lists sites.
type SitesCmd struct {
	List    SitesListCmd    `cmd:"" default:"withargs" help:"List sites and their agents' last report (the default)."`
	Token   SitesTokenCmd   `cmd:"" help:"Create a one-time enrollment token and print the nkudo-edge enroll command for the edge host."`
	NetBird SitesNetBirdCmd `cmd:"" name:"netbird" help:"Set a site's NetBird setup key (from a file or stdin, never the command line) and management URL."`
	Show    SitesShowCmd    `cmd:"" help:"Show one site: its agent's last report and the age recipient secrets for it are encrypted to."`
}

// SitesListCmd lists the tenant's sites and their agents' last report.
type SitesListCmd struct{}

// Run lists sites.
func (c *SitesListCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	sites, err := client.ListSites(ctx)
	if err != nil {
		return fmt.Errorf("list sites: %w", err)
	}
	if g.Output == "json" {
		return writeJSON(s, sites)
	}
	w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SITE\tONLINE\tLAST HEARTBEAT\tHOST\tINVENTORY\tNETBIRD")
	for _, st := range sites {
		online, last, host := "no", "never", "-"
		if st.Online {
			online = "yes"
		}
		if !st.LastHeartbeat.IsZero() {
			last = time.Duration(st.HeartbeatAge).Round(time.Second).String() + " ago"
		}
		if st.Facts != nil && st.Facts.Hostname != "" {
			host = st.Facts.Hostname
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\tv%d\t%s\n", st.Name, online, last, host, st.InventoryVersion, netbirdCell(st))
	}
	return w.Flush()
}
