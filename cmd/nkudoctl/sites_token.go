package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nkudo/nkudo/api"
)

// SitesTokenCmd creates a one-time enrollment token for a site.
type SitesTokenCmd struct {
	Site   string        `arg:"" help:"Site name."`
	TTL    time.Duration `name:"ttl" placeholder:"DURATION" help:"How long the token stays valid (default: the server's, 1h; at most 168h)."`
	Create bool          `help:"Register the site first when it does not exist yet."`
}

// Help is the long help text.
func (c *SitesTokenCmd) Help() string {
	return `Creates a one-time enrollment token for SITE and prints the command to run
as root on the edge host:

  nkudo-edge enroll --control-plane URL --token TOKEN --ca-hash sha256:HEX

That line is the only thing on stdout; the expiry goes to stderr. The same
three values are what install-edge.sh takes. -o json prints the server's
whole answer (id, token, expiresAt, caFingerprint, command). Each token
enrolls one host once; creating another does not invalidate earlier ones
before they expire.`
}

// Run creates the token (and the site, with --create) and prints the command.
func (c *SitesTokenCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	if c.TTL < 0 {
		return fmt.Errorf("--ttl %s: want a positive duration", c.TTL)
	}
	if c.Create {
		_, err := client.GetSite(ctx, c.Site)
		switch {
		case errors.Is(err, api.ErrNotFound):
			if _, err := client.CreateSite(ctx, c.Site); err != nil {
				return fmt.Errorf("create site %s: %w", c.Site, err)
			}
			fmt.Fprintf(s.Err, "created site %s\n", c.Site)
		case err != nil:
			return fmt.Errorf("get site %s: %w", c.Site, err)
		}
	}
	tok, err := client.CreateEnrollmentToken(ctx, c.Site, c.TTL)
	if err != nil {
		if errors.Is(err, api.ErrNotFound) && !c.Create {
			return fmt.Errorf("create enrollment token for site %s: %w (pass --create to register the site)", c.Site, err)
		}
		return fmt.Errorf("create enrollment token for site %s: %w", c.Site, err)
	}
	if g.Output == "json" {
		return writeJSON(s, tok)
	}
	if _, err := fmt.Fprintln(s.Out, tok.Command); err != nil {
		return err
	}
	fmt.Fprintf(s.Err, "one-time token for site %s, valid until %s; run the command above as root on the edge host\n",
		tok.Site, tok.ExpiresAt.UTC().Format(time.RFC3339))
	return nil
}
