package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/nkudo/nkudo/api"
)

// maxCredential bounds what is read as a secret: an SSH private key is a
// few KiB, so anything near this size is the wrong file.
const maxCredential = 64 << 10

// CredentialsCmd manages the tenant's credentials.
type CredentialsCmd struct {
	List CredentialsListCmd `cmd:"" default:"withargs" help:"List the tenant's credentials: names, kinds, hosts and fingerprints, never secrets (the default)."`
	Set  CredentialsSetCmd  `cmd:"" help:"Create or replace a credential from a file or stdin (never the command line)."`
	Rm   CredentialsRmCmd   `cmd:"" name:"rm" help:"Remove a credential."`
}

// CredentialsListCmd lists credentials.
type CredentialsListCmd struct{}

// Run lists.
func (c *CredentialsListCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	creds, err := client.ListCredentials(ctx)
	if err != nil {
		return fmt.Errorf("list credentials: %w", err)
	}
	if g.Output == "json" {
		return writeJSON(s, creds)
	}
	w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tKIND\tHOST\tFINGERPRINT\tUPDATED")
	for _, cr := range creds {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", cr.Name, cr.Kind, cr.Host, cr.Fingerprint, cr.UpdatedAt.Format("2006-01-02 15:04"))
	}
	return w.Flush()
}

// CredentialsSetCmd creates or replaces a credential.
type CredentialsSetCmd struct {
	Name       string `arg:"" help:"Credential name (what repositories' credentialsRef and forgeCredentialsRef name)."`
	FromFile   string `name:"from-file" required:"" placeholder:"FILE" help:"Read the secret from FILE ('-' for standard input): a token, user:password, or a PEM private key."`
	Kind       string `help:"token, basic (user:password) or ssh-key." enum:"token,basic,ssh-key" default:"token"`
	Host       string `required:"" help:"The host (or host:port) the credential may be sent to; it is refused for any other."`
	KnownHosts string `name:"known-hosts" placeholder:"FILE" help:"known_hosts file pinning the SSH host keys (ssh-key only; required for it)."`
}

// Help is the long help text.
func (c *CredentialsSetCmd) Help() string {
	return `Stores a secret for the repositories of your tenant to fetch with
(credentialsRef) or post commit statuses with (forgeCredentialsRef). The server
sends it only to --host, over https or ssh, and never shows it again: listing
shows a fingerprint (sha256: and the first 16 hex digits of its SHA-256).

The secret is read from --from-file FILE, or standard input with '-', never
from the command line. Surrounding whitespace is ignored. Examples:

  nkudoctl credentials set github-ci --from-file ./token --host github.com
  nkudoctl credentials set forge --from-file - --host api.github.com < token
  nkudoctl credentials set deploy --kind ssh-key --from-file id_ed25519 \
    --known-hosts known_hosts --host git.example.com`
}

// Run reads the secret and sends it.
func (c *CredentialsSetCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	secret, err := c.readSecret(s)
	if err != nil {
		return err
	}
	req := api.PutCredentialRequest{Kind: c.Kind, Secret: secret, Host: c.Host}
	if c.KnownHosts != "" {
		if c.Kind != api.CredentialSSHKey {
			return errors.New("--known-hosts: only an ssh-key credential has known_hosts")
		}
		b, err := os.ReadFile(c.KnownHosts)
		if err != nil {
			return fmt.Errorf("--known-hosts: %w", err)
		}
		req.KnownHosts = string(b)
	} else if c.Kind == api.CredentialSSHKey {
		return errors.New("--known-hosts is required for an ssh-key: host keys are always pinned")
	}
	cr, err := client.PutCredential(ctx, c.Name, req)
	if err != nil {
		return fmt.Errorf("set credential %s: %w", c.Name, err)
	}
	fmt.Fprintf(s.Out, "credential %s stored (%s, host %s, %s)\n", cr.Name, cr.Kind, cr.Host, cr.Fingerprint)
	return nil
}

// readSecret reads the secret from the file or stdin; its errors name the
// source and never quote the content.
func (c *CredentialsSetCmd) readSecret(s *Streams) (string, error) {
	var (
		r    io.Reader
		from string
	)
	if c.FromFile == "-" {
		if s.In == nil {
			return "", errors.New("--from-file -: no standard input")
		}
		r, from = s.In, "standard input"
	} else {
		f, err := os.Open(c.FromFile)
		if err != nil {
			return "", fmt.Errorf("--from-file: %w", err)
		}
		defer f.Close()
		r, from = f, c.FromFile
	}
	b, err := io.ReadAll(io.LimitReader(r, maxCredential+1))
	if err != nil {
		return "", fmt.Errorf("read secret from %s: %w", from, err)
	}
	if len(b) > maxCredential {
		return "", fmt.Errorf("secret from %s: longer than %d bytes; is it the right file?", from, maxCredential)
	}
	secret := strings.TrimSpace(string(b))
	if secret == "" {
		return "", fmt.Errorf("secret from %s is empty", from)
	}
	if c.Kind != api.CredentialSSHKey && strings.ContainsAny(secret, "\r\n") {
		return "", fmt.Errorf("secret from %s holds line breaks; a %s is one line", from, c.Kind)
	}
	return secret, nil
}

// CredentialsRmCmd removes a credential.
type CredentialsRmCmd struct {
	Name string `arg:"" help:"Credential name."`
}

// Run removes.
func (c *CredentialsRmCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	if err := client.DeleteCredential(ctx, c.Name); err != nil {
		return fmt.Errorf("remove credential %s: %w", c.Name, err)
	}
	fmt.Fprintf(s.Out, "credential %s removed\n", c.Name)
	return nil
}
