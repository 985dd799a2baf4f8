package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/maintenance"
	"github.com/nkudo/nkudo/store/backend"
)

// AdminHealthCmd checks a control-plane installation from its host.
type AdminHealthCmd struct {
	StoreFlags
	CACertFile     string `help:"CA certificate (persistent PKI; default: the dev PKI in the data dir)." env:"CA_CERT_FILE" type:"path" placeholder:"FILE"`
	CAKeyFile      string `help:"CA private key (persistent PKI)." env:"CA_KEY_FILE" type:"path" placeholder:"FILE"`
	ServerCertFile string `help:"Server certificate (persistent PKI)." env:"SERVER_CERT_FILE" type:"path" placeholder:"FILE"`
	ServerKeyFile  string `help:"Server private key (persistent PKI)." env:"SERVER_KEY_FILE" type:"path" placeholder:"FILE"`

	Server        string        `help:"Also ask this running control plane's /readyz (https://host:port), trusting the CA checked above." placeholder:"URL"`
	Output        string        `help:"Output format: table or json." default:"table" enum:"table,json" short:"o"`
	CertWarning   time.Duration `help:"Warn when the CA or server certificate expires within this." default:"720h"`
	Grace         time.Duration `help:"Added to a site's heartbeat interval before it counts as offline." default:"10s"`
	Interval      time.Duration `help:"Heartbeat interval of sites that were never given one." default:"10s" env:"NKUDO_MIN_HEARTBEAT_INTERVAL"`
	StuckAfter    time.Duration `help:"An in-progress plan with no progress for this long counts as stuck." default:"1h"`
	StatusesAfter time.Duration `help:"A commit status not accepted by its forge for this long counts as failing." default:"15m"`
	Timeout       time.Duration `help:"Give up on the checks after this long." default:"30s"`
}

// Run prints the report. Exit 0 healthy, 1 degraded or unhealthy, 2 could not run.
func (c *AdminHealthCmd) Run(ctx context.Context, g *Globals) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	rep, err := c.check(ctx, g)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if err := writeHealth(g.stdout, rep, c.Output); err != nil {
		return &exitError{code: 2, err: err}
	}
	if rep.Status != maintenance.StatusOK {
		return &exitError{code: 1}
	}
	return nil
}

func (c *AdminHealthCmd) check(ctx context.Context, g *Globals) (maintenance.Report, error) {
	now := time.Now()
	rep := maintenance.Report{Time: now.UTC()}
	skip := func(name, why string) {
		rep.Add(maintenance.Check{Name: name, Status: maintenance.StatusSkip, Message: why})
	}

	// The check is read-only: it inspects the schema and opens the store
	// without migrating (nor creating a missing SQLite file).
	isSQLite := databaseKind(c.DatabaseURL) == "sqlite"
	var sqlitePath string
	if isSQLite {
		path, err := backend.SQLitePath(c.DatabaseURL, c.DataDir)
		if err != nil {
			return rep, err
		}
		sqlitePath = path
	} else if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		return rep, fmt.Errorf("database url %s: want sqlite:// or postgres://", backend.Redact(c.DatabaseURL))
	}
	dbOK, noDBWhy := false, "needs the database"
	var checks []func()
	pending, err := backend.Pending(ctx, c.DatabaseURL, c.DataDir, g.Logger())
	switch {
	case isSQLite && errors.Is(err, fs.ErrNotExist):
		rep.Add(maintenance.Check{Name: "database", Status: maintenance.StatusFail, Message: fmt.Sprintf("no SQLite database at %s (wrong --data-dir, or the server never ran)", sqlitePath)})
	case err != nil:
		rep.Add(maintenance.Check{Name: "database", Status: maintenance.StatusFail, Message: err.Error()})
	case len(pending) > 0:
		// The store's queries assume the current schema.
		rep.Add(maintenance.PendingMigrations(pending))
		noDBWhy = "needs the pending migrations applied"
	default:
		st, err := backend.OpenWith(ctx, c.DatabaseURL, c.DataDir, backend.OpenOptions{Logger: g.Logger(), NoMigrate: true})
		if err != nil {
			rep.Add(maintenance.Check{Name: "database", Status: maintenance.StatusFail, Message: err.Error()})
			break
		}
		defer st.Close()
		dbOK = true
		rep.Add(maintenance.CheckDatabase(ctx, st, nil))
		checks = append(checks,
			func() {
				rep.Add(maintenance.CheckSites(ctx, st, now, maintenance.SiteThresholds{Grace: c.Grace, DefaultInterval: c.Interval}))
			},
			func() { rep.Add(maintenance.CheckPlans(ctx, st, now, c.StuckAfter)) },
			func() { rep.Add(maintenance.CheckStatuses(ctx, st, now, c.StatusesAfter)) },
		)
	}

	files := maintenance.DevPKIFiles(filepath.Join(c.DataDir, "pki"))
	if c.CACertFile != "" || c.CAKeyFile != "" || c.ServerCertFile != "" || c.ServerKeyFile != "" {
		files = maintenance.PKIFiles{CACert: c.CACertFile, CAKey: c.CAKeyFile, ServerCert: c.ServerCertFile, ServerKey: c.ServerKeyFile}
	}
	pkiCheck, ca := maintenance.CheckPKI(files, now, c.CertWarning)
	rep.Add(pkiCheck)

	if c.Server == "" {
		skip("server", "not asked (pass --server URL)")
	} else {
		cfg := api.ClientConfig{BaseURL: strings.TrimRight(c.Server, "/")}
		if ca != nil {
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			cfg.RootCAs = pool
		}
		client, err := api.NewClient(cfg)
		if err != nil {
			return rep, fmt.Errorf("--server: %w", err)
		}
		rep.Add(maintenance.CheckReady(ctx, client, cfg.BaseURL))
		client.CloseIdleConnections()
	}

	if !dbOK {
		for _, n := range []string{"sites", "plans", "commit statuses"} {
			skip(n, noDBWhy)
		}
	}
	for _, f := range checks {
		f()
	}
	return rep, nil
}

// writeHealth prints the report as a table (at most 10 items per check;
// json has them all) or as JSON.
func writeHealth(w io.Writer, rep maintenance.Report, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
	for _, ck := range rep.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ck.Name, strings.ToUpper(string(ck.Status)), ck.Message)
		for i, it := range ck.Items {
			if i == 10 {
				fmt.Fprintf(tw, "\t\t… and %d more (-o json lists all)\n", len(ck.Items)-i)
				break
			}
			fmt.Fprintf(tw, "\t\t- %s\n", it)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "overall: %s\n", strings.ToUpper(string(rep.Status)))
	return err
}
