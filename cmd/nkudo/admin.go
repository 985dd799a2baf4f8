package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/user"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
)

// AdminCmd groups the bootstrap commands, which work on the store directly
// (no server or token needed: whoever can read the database is admin).
type AdminCmd struct {
	Tenant AdminTenantCmd `cmd:"" help:"Manage tenants."`
	Token  AdminTokenCmd  `cmd:"" help:"Manage API tokens."`
	Site   AdminSiteCmd   `cmd:"" help:"Manage sites."`
	Health AdminHealthCmd `cmd:"" help:"Check database, PKI, server, sites, plans and statuses (exit 0 healthy, 1 degraded or unhealthy, 2 could not run)."`

	Credentials AdminCredentialsCmd `cmd:"" help:"Import tenants' credentials (sealed with the server key)."`
}

// AdminTenantCmd manages tenants.
type AdminTenantCmd struct {
	Create AdminTenantCreateCmd `cmd:"" help:"Create a tenant."`
	Delete AdminTenantDeleteCmd `cmd:"" help:"Offboard a tenant: with --purge, revoke its sites' certificates and delete all its data (the audit log is kept)."`
}

// AdminTokenCmd manages API tokens.
type AdminTokenCmd struct {
	Create AdminTokenCreateCmd `cmd:"" help:"Create an API token (printed once)."`
}

// AdminSiteCmd manages sites.
type AdminSiteCmd struct {
	Revoke AdminSiteRevokeCmd `cmd:"" help:"Revoke a site's agent certificate; its next request is refused."`
}

// OutputFlag is -o of the admin commands that print data.
type OutputFlag struct {
	Output string `help:"Output format: table or json." default:"table" enum:"table,json" short:"o"`
}

// writeJSON prints v indented, for -o json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// localActor names the operator running an admin command, for the audit log.
func localActor() store.Actor {
	name := "local"
	if u, err := user.Current(); err == nil {
		name = "local:" + u.Username
	}
	return store.Actor{Kind: store.ActorAdmin, ID: name}
}

// AdminTenantCreateCmd creates a tenant.
type AdminTenantCreateCmd struct {
	StoreFlags
	OutputFlag
	ID   string `arg:"" help:"Tenant ID (a DNS label: a-z, 0-9, '-')."`
	Name string `help:"Display name."`
}

// Run creates the tenant.
func (c *AdminTenantCreateCmd) Run(ctx context.Context, g *Globals) (err error) {
	if !store.ValidName(c.ID) {
		return fmt.Errorf("tenant ID %q: want a DNS label (a-z, 0-9, '-', at most 63 characters)", c.ID)
	}
	st, err := c.Open(ctx, g.Logger())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	t, err := st.CreateTenant(ctx, localActor(), store.Tenant{ID: c.ID, Name: c.Name})
	if err != nil {
		return fmt.Errorf("create tenant: %w", err)
	}
	if c.Output == "json" {
		return writeJSON(g.stdout, t)
	}
	fmt.Fprintf(g.stdout, "tenant %s created\n", t.ID)
	return nil
}

// AdminTokenCreateCmd creates an API token.
type AdminTokenCreateCmd struct {
	StoreFlags
	OutputFlag
	Tenant    string        `help:"Tenant the token acts for." xor:"scope" required:""`
	AdminFlag bool          `name:"admin" help:"Create an admin-scope token (all tenants)." xor:"scope" required:""`
	Name      string        `help:"What the token is for (free text)."`
	TTL       time.Duration `help:"Lifetime (0 = does not expire)." default:"0"`
}

// Run creates the token and prints it once.
func (c *AdminTokenCreateCmd) Run(ctx context.Context, g *Globals) (err error) {
	st, err := c.Open(ctx, g.Logger())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	resp, err := controlplane.CreateAPIToken(ctx, st, localActor(), api.CreateTokenRequest{Tenant: c.Tenant, Admin: c.AdminFlag, Name: c.Name, TTL: api.Duration(c.TTL)}, time.Now())
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	if c.Output == "json" {
		// The whole answer, the token included: shown only this once too.
		return writeJSON(g.stdout, resp)
	}
	fmt.Fprintln(g.stdout, resp.Token)
	scope := "tenant " + resp.Tenant
	if resp.Admin {
		scope = "admin"
	}
	fmt.Fprintf(g.stderr, "token %s (%s) created; it is shown only this once\n", resp.ID, scope)
	return nil
}

// AdminSiteRevokeCmd revokes a site's certificate.
type AdminSiteRevokeCmd struct {
	StoreFlags
	OutputFlag
	Tenant string `help:"Tenant of the site." required:""`
	Site   string `arg:"" help:"Site name."`
}

// Run revokes.
func (c *AdminSiteRevokeCmd) Run(ctx context.Context, g *Globals) (err error) {
	st, err := c.Open(ctx, g.Logger())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	serial, err := controlplane.RevokeSite(ctx, st, localActor(), c.Tenant, c.Site, time.Now())
	if err != nil {
		return fmt.Errorf("revoke site %s: %w", c.Site, err)
	}
	if c.Output == "json" {
		return writeJSON(g.stdout, map[string]string{"tenant": c.Tenant, "site": c.Site, "serial": serial})
	}
	fmt.Fprintf(g.stdout, "certificate %s of site %s/%s revoked\n", serial, c.Tenant, c.Site)
	return nil
}

// PKICmd manages the CA.
type PKICmd struct {
	Init PKIInitCmd `cmd:"" help:"Create a persistent CA and server certificate in a directory."`
}

// PKIInitCmd creates a persistent CA.
type PKIInitCmd struct {
	Dir  string   `help:"Directory to write ca.crt, ca.key, server.crt, server.key and audit.key into." required:"" type:"path"`
	Host []string `help:"DNS names or IPs the server certificate covers (besides localhost)." placeholder:"HOST"`
}

// Run writes the files and prints the settings to use them.
func (c *PKIInitCmd) Run(g *Globals) error {
	f, err := pki.Init(c.Dir, c.Host, time.Now())
	if err != nil {
		return fmt.Errorf("pki init: %w", err)
	}
	fmt.Fprintf(g.stdout, "CA_CERT_FILE=%s\nCA_KEY_FILE=%s\nSERVER_CERT_FILE=%s\nSERVER_KEY_FILE=%s\nAUDIT_KEY_FILE=%s\n# CA fingerprint: %s\n",
		f.CACert, f.CAKey, f.ServerCert, f.ServerKey, f.AuditKey, f.Fingerprint)
	return nil
}
