package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/nkudo/nkudo/api"
)

// SitesShowCmd shows one site.
type SitesShowCmd struct {
	Site string `arg:"" help:"Site name."`
}

// Run shows the site.
func (c *SitesShowCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	st, err := client.GetSite(ctx, c.Site)
	if err != nil {
		return fmt.Errorf("get site %s: %w", c.Site, err)
	}
	if g.Output == "json" {
		return writeJSON(s, st)
	}
	w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(w, "%s:\t%s\n", k, v) }
	row("Site", st.Name)
	online, last := "no", "never"
	if st.Online {
		online = "yes"
	}
	if !st.LastHeartbeat.IsZero() {
		last = time.Duration(st.HeartbeatAge).Round(time.Second).String() + " ago"
	}
	row("Online", online)
	row("Last heartbeat", last)
	row("Revoked", fmt.Sprint(st.Revoked))
	row("Inventory", fmt.Sprintf("v%d", st.InventoryVersion))
	host, agentVersion, recipient := "-", "-", "- (the agent has not reported one)"
	if f := st.Facts; f != nil {
		if f.Hostname != "" {
			host = f.Hostname
		}
		if f.AgentVersion != "" {
			agentVersion = f.AgentVersion
		}
		if f.AgeRecipient != "" {
			recipient = f.AgeRecipient
		}
	}
	row("Host", host)
	row("Agent version", agentVersion)
	row("Age recipient", recipient)
	row("NetBird", netbirdCell(st))
	return w.Flush()
}
