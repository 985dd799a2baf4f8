package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/store"
)

// AdminCredentialsCmd manages tenants' credentials on the store.
type AdminCredentialsCmd struct {
	Import AdminCredentialsImportCmd `cmd:"" help:"Import a credential file (from the old shared credentials directory) as one tenant's credential."`
}

// AdminCredentialsImportCmd imports one operator file as a tenant's
// credential. Repositories whose credentialsRef named the file keep
// working once it is imported under the same name for their tenant.
type AdminCredentialsImportCmd struct {
	StoreFlags
	OutputFlag
	Tenant string `help:"Tenant that owns the credential." required:""`
	Name   string `help:"Credential name (default: the file's name, which is what repositories referenced)."`
	File   string `help:"File holding the secret: a token, \"user:password\", or a PEM private key." required:"" type:"path"`
	Kind   string `help:"token, basic or ssh-key (default: ssh-key for a PEM key, basic for one user:password line, else token)." enum:",token,basic,ssh-key" default:""`
	Host   string `help:"Host the credential may be sent to (default: the one host of the tenant's repositories that reference it)."`
	// KnownHosts defaults to the files the old directory lookup used.
	KnownHosts string `help:"known_hosts file for an ssh-key (default: FILE.known_hosts, else known_hosts beside FILE)." type:"path" placeholder:"FILE"`
}

// Run imports the file.
func (c *AdminCredentialsImportCmd) Run(ctx context.Context, g *Globals) (err error) {
	b, err := os.ReadFile(c.File)
	if err != nil {
		return fmt.Errorf("--file: %w", err)
	}
	secret := strings.TrimSpace(string(b))
	name := c.Name
	if name == "" {
		name = filepath.Base(c.File)
	}
	kind := store.CredentialKind(c.Kind)
	if kind == "" {
		kind = guessKind(secret)
	}
	st, err := c.Open(ctx, g.Logger())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	host := c.Host
	if host == "" {
		if host, err = referencingHost(ctx, st, c.Tenant, name); err != nil {
			return err
		}
	}
	cred := store.Credential{Tenant: c.Tenant, Name: name, Kind: kind, Host: host}
	if kind == store.CredentialSSHKey {
		if cred.KnownHosts, err = c.knownHosts(); err != nil {
			return err
		}
	}
	out, err := st.PutCredential(ctx, localActor(), cred, store.Secret(secret))
	if err != nil {
		return fmt.Errorf("import credential: %w", err)
	}
	if c.Output == "json" {
		return writeJSON(g.stdout, out)
	}
	fmt.Fprintf(g.stdout, "credential %s/%s (%s, host %s, %s) imported\n", out.Tenant, out.Name, out.Kind, out.Host, out.Fingerprint)
	return nil
}

// guessKind classifies a secret as the old file lookup did.
func guessKind(secret string) store.CredentialKind {
	switch {
	case strings.HasPrefix(secret, "-----BEGIN"):
		return store.CredentialSSHKey
	case strings.Contains(secret, ":") && !strings.Contains(secret, "\n"):
		return store.CredentialBasic
	}
	return store.CredentialToken
}

func (c *AdminCredentialsImportCmd) knownHosts() (string, error) {
	candidates := []string{c.File + ".known_hosts", filepath.Join(filepath.Dir(c.File), "known_hosts")}
	if c.KnownHosts != "" {
		candidates = []string{c.KnownHosts}
	}
	for _, p := range candidates {
		b, err := os.ReadFile(p)
		if err == nil {
			return string(b), nil
		}
		if c.KnownHosts != "" || !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("--known-hosts: %w", err)
		}
	}
	return "", errors.New("--known-hosts: an ssh-key credential needs pinned host keys and no known_hosts file was found beside --file")
}

// referencingHost is the one host the tenant's repositories send the
// credential name to (their URL for credentialsRef, their forge API for
// forgeCredentialsRef); anything else needs --host.
func referencingHost(ctx context.Context, st store.Store, tenant, name string) (string, error) {
	repos, err := st.ListRepositories(ctx, tenant)
	if err != nil {
		return "", err
	}
	var hosts []string
	add := func(target string) {
		_, h := store.CredentialTarget(target)
		if name, _, err := net.SplitHostPort(h); err == nil {
			h = name
		}
		if h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	for _, r := range repos {
		if r.CredentialsRef == name {
			add(r.URL)
		}
		if r.ForgeCredentialsRef == name && r.ForgeKind != store.ForgeGitNotes {
			add(forge.APIBase(string(r.ForgeKind), r.ForgeAPIURL))
		}
	}
	if len(hosts) != 1 {
		return "", fmt.Errorf("--host is required: tenant %s's repositories referencing %q use %d hosts %v", tenant, name, len(hosts), hosts)
	}
	return hosts[0], nil
}
