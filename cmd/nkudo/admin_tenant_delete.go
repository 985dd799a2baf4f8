package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nkudo/nkudo/controlplane/maintenance"
	"github.com/nkudo/nkudo/store"
)

// exitError makes a command exit with code; err, when set, is printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// AdminTenantDeleteCmd offboards a tenant.
type AdminTenantDeleteCmd struct {
	StoreFlags
	OutputFlag
	ID    string `arg:"" help:"Tenant ID."`
	Purge bool   `help:"Really delete: revoke every site's agent certificate, then delete the tenant's tokens, repositories, sites, inventories, plans, logs, statuses and previews. Without it, only show what would be deleted."`
	Yes   bool   `short:"y" help:"Do not ask for confirmation (needed when stdin is not a terminal)."`
}

// Run shows what the tenant owns and, with --purge and a confirmation,
// deletes it. Exit 0 deleted, 1 refused or failed.
func (c *AdminTenantDeleteCmd) Run(ctx context.Context, g *Globals) (err error) {
	st, err := c.Open(ctx, g.Logger())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	contents, err := maintenance.SurveyTenant(ctx, st, c.ID)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("tenant %s does not exist", c.ID)
	}
	if err != nil {
		return err
	}
	// -o json prints one object at the end, whatever the outcome.
	rep := tenantDeleteReport{Tenant: c.ID, Contents: contents, Revoked: []revokedCert{}}
	out := g.stdout
	if c.Output == "json" {
		out = io.Discard
		defer func() {
			if jerr := writeJSON(g.stdout, rep); jerr != nil {
				err = errors.Join(err, jerr)
			}
		}()
	}
	verb := "would delete"
	if c.Purge {
		verb = "will delete"
	}
	fmt.Fprintf(out, "tenant %s: %s\n", c.ID, verb)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, r := range contents.Rows() {
		fmt.Fprintf(w, "  %s\t%s\n", r[0], r[1])
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "  (its audit events are kept, and a tenant.purge event is added)")
	if !c.Purge {
		return &exitError{code: 1, err: fmt.Errorf("refusing to delete tenant %s without --purge", c.ID)}
	}
	if !c.Yes {
		if !isTerminal(os.Stdin) {
			return &exitError{code: 1, err: fmt.Errorf("refusing to delete tenant %s: stdin is not a terminal, confirm with --yes", c.ID)}
		}
		if !confirm(os.Stdin, g.stderr, c.ID) {
			return &exitError{code: 1, err: fmt.Errorf("tenant %s not deleted: not confirmed", c.ID)}
		}
	}
	res, err := maintenance.PurgeTenant(ctx, st, localActor(), c.ID, time.Now())
	if err != nil {
		return err
	}
	rep.Deleted = true
	fmt.Fprintf(out, "tenant %s deleted; %d agent certificate(s) revoked\n", c.ID, len(res.Revoked))
	for _, r := range res.Revoked {
		site, serial, _ := strings.Cut(r, ":")
		rep.Revoked = append(rep.Revoked, revokedCert{Site: site, Serial: serial})
		fmt.Fprintf(out, "  revoked %s (site %s)\n", serial, site)
	}
	return nil
}

// tenantDeleteReport is admin tenant delete -o json: what the tenant
// owns (or owned), whether it was deleted, and the certificates revoked.
type tenantDeleteReport struct {
	Tenant   string                     `json:"tenant"`
	Contents maintenance.TenantContents `json:"contents"`
	Deleted  bool                       `json:"deleted"`
	Revoked  []revokedCert              `json:"revoked"`
}

type revokedCert struct {
	Site   string `json:"site"`
	Serial string `json:"serial"`
}

// confirm asks for the tenant ID to be typed back.
func confirm(in io.Reader, out io.Writer, tenant string) bool {
	fmt.Fprintf(out, "This cannot be undone. Type the tenant ID (%s) to delete it: ", tenant)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(out)
		return false
	}
	return strings.TrimSpace(line) == tenant
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
