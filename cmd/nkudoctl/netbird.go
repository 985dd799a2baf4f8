package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nkudo/nkudo/api"
)

// NetBirdCmd manages the tenant's NetBird integration.
type NetBirdCmd struct {
	Show NetBirdShowCmd `cmd:"" default:"withargs" help:"Show the tenant's NetBird management URL and token fingerprint, never the token (the default)."`
	Set  NetBirdSetCmd  `cmd:"" help:"Set the NetBird management URL and service-user token; the server checks them first."`
	Rm   NetBirdRmCmd   `cmd:"" name:"rm" help:"Remove the integration (the token credential stays)."`
}

// NetBirdShowCmd shows the integration.
type NetBirdShowCmd struct{}

// Run shows.
func (c *NetBirdShowCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	n, err := client.GetNetBirdIntegration(ctx)
	if errors.Is(err, api.ErrNotFound) {
		return errors.New("no NetBird integration: set one with `nkudoctl netbird set --url URL --token-file FILE`")
	}
	if err != nil {
		return fmt.Errorf("show netbird integration: %w", err)
	}
	if g.Output == "json" {
		return writeJSON(s, n)
	}
	fmt.Fprintf(s.Out, "url:         %s\ncredential:  %s\nfingerprint: %s\nupdated:     %s\n",
		n.URL, n.Credential, n.Fingerprint, n.UpdatedAt.Format("2006-01-02 15:04"))
	return nil
}

// NetBirdSetCmd sets the integration.
type NetBirdSetCmd struct {
	URL        string `name:"url" required:"" placeholder:"URL" help:"The management server, e.g. https://api.netbird.io."`
	TokenFile  string `name:"token-file" required:"" placeholder:"FILE" help:"Read the service user's personal access token from FILE ('-' for standard input), never the command line."`
	Credential string `default:"netbird" help:"Name of the tenant credential that keeps the token."`
}

// Help is the long help text.
func (c *NetBirdSetCmd) Help() string {
	return `Connects your tenant to its NetBird account. The server checks the token
with GET /api/groups on the management API before it stores anything, then
keeps it as the token credential --credential, bound to the URL's host, and
never shows it again. Create a service user in the NetBird dashboard, give it
a personal access token, and save the token to a file:

  nkudoctl netbird set --url https://api.netbird.io --token-file ./nb-token`
}

// Run reads the token and sends it.
func (c *NetBirdSetCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	token, err := (&CredentialsSetCmd{FromFile: c.TokenFile, Kind: api.CredentialToken}).readSecret(s)
	if err != nil {
		return fmt.Errorf("--token-file: %w", err)
	}
	n, err := client.SetNetBirdIntegration(ctx, api.SetNetBirdIntegrationRequest{
		URL: strings.TrimSpace(c.URL), Token: token, Credential: c.Credential,
	})
	if err != nil {
		return fmt.Errorf("set netbird integration: %w", err)
	}
	fmt.Fprintf(s.Out, "netbird integration set: %s (token %s in credential %s; %d groups)\n", n.URL, n.Fingerprint, n.Credential, n.Groups)
	return nil
}

// NetBirdRmCmd removes the integration.
type NetBirdRmCmd struct{}

// Run removes.
func (c *NetBirdRmCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	if err := client.DeleteNetBirdIntegration(ctx); err != nil {
		return fmt.Errorf("remove netbird integration: %w", err)
	}
	fmt.Fprintln(s.Out, "netbird integration removed")
	return nil
}

// netbirdCell summarises a site's NetBird state for `nkudoctl sites`: the
// mesh as the agent reports it (its IP, or DOWN when the client is
// installed but not connected to management) and the control plane's
// management of its peer (key pending, last error).
func netbirdCell(st api.Site) string {
	var parts []string
	if f := st.Facts; f != nil && f.NetBird.Installed {
		switch {
		case !f.NetBird.ManagementConnected:
			parts = append(parts, "DOWN")
		case f.NetBird.IP != "":
			parts = append(parts, f.NetBird.IP)
		}
	}
	if s := st.NetBirdSync; s != nil {
		switch {
		case s.LastError != "":
			parts = append(parts, "sync failing")
		case s.KeyPending:
			parts = append(parts, "key pending")
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
