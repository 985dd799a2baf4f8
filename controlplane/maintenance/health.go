package maintenance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
)

// Status is the outcome of one health check, ordered by severity.
type Status string

const (
	StatusOK   Status = "ok"
	StatusSkip Status = "skip" // not run (not asked for, or what it needs failed)
	StatusWarn Status = "warn" // degraded: works, needs attention
	StatusFail Status = "fail" // unhealthy
)

func (s Status) rank() int {
	switch s {
	case StatusWarn:
		return 1
	case StatusFail:
		return 2
	}
	return 0
}

// Check is one line of the health report.
type Check struct {
	Name    string `json:"name"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	// Items name what needs attention (sites, plans, statuses), one per entry.
	Items []string `json:"items,omitempty"`
}

// Report is a set of checks and their combined status.
type Report struct {
	Status Status    `json:"status"` // the worst check's status (skips count as ok)
	Time   time.Time `json:"time"`
	Checks []Check   `json:"checks"`
}

// Add appends c and folds its status into the report's.
func (r *Report) Add(c Check) {
	r.Checks = append(r.Checks, c)
	if r.Status == "" {
		r.Status = StatusOK
	}
	if c.Status.rank() > r.Status.rank() {
		r.Status = c.Status
	}
}

// CheckDatabase pings the store. pending are the migrations not yet applied
// to it (backend.Pending; the health check never applies them): the server
// migrates at start, so pending ones mean it runs an older nkudo or has not
// started since the upgrade.
func CheckDatabase(ctx context.Context, st store.Store, pending []string) Check {
	c := Check{Name: "database"}
	if err := st.Ping(ctx); err != nil {
		c.Status, c.Message = StatusFail, fmt.Sprintf("unreachable: %v", err)
		return c
	}
	if len(pending) > 0 {
		return PendingMigrations(pending)
	}
	c.Status, c.Message = StatusOK, "reachable, migrations current"
	return c
}

// PendingMigrations is the degraded database check for a reachable
// database whose schema lacks the named migrations.
func PendingMigrations(pending []string) Check {
	return Check{
		Name:    "database",
		Status:  StatusWarn,
		Message: fmt.Sprintf("reachable; %d pending migration(s) not applied (%s): run `nkudo migrate` or restart the servers with this version", len(pending), strings.Join(pending, ", ")),
		Items:   pending,
	}
}

// PKIFiles name the CA and server certificate files (the four persistent
// settings, or the files of the dev PKI directory).
type PKIFiles struct {
	CACert, CAKey, ServerCert, ServerKey string
	Dev                                  bool // the dev PKI in the data dir
}

// DevPKIFiles are the files of the dev PKI in dir.
func DevPKIFiles(dir string) PKIFiles {
	return PKIFiles{
		CACert: filepath.Join(dir, pki.CACertFile), CAKey: filepath.Join(dir, pki.CAKeyFile),
		ServerCert: filepath.Join(dir, pki.ServerCertFile), ServerKey: filepath.Join(dir, pki.ServerKeyFile),
		Dev: true,
	}
}

// DefaultCertWarning is how close to expiry a certificate starts to warn.
const DefaultCertWarning = 30 * 24 * time.Hour

// CheckPKI reads the CA and server certificate (never creating anything):
// the CA must be present with its matching key, the server certificate must
// chain to it and be valid at now; a certificate expiring within warnBefore
// warns. It also returns the CA certificate (nil when unreadable), to trust
// when probing the server.
func CheckPKI(f PKIFiles, now time.Time, warnBefore time.Duration) (Check, *x509.Certificate) {
	c := Check{Name: "pki"}
	fail := func(format string, a ...any) (Check, *x509.Certificate) {
		c.Status, c.Message = StatusFail, fmt.Sprintf(format, a...)
		return c, nil
	}
	caPEM, err := os.ReadFile(f.CACert)
	if err != nil {
		if f.Dev {
			return fail("no dev CA: %v (has the server ever started on this data dir?)", err)
		}
		return fail("CA certificate: %v", err)
	}
	keyPEM, err := os.ReadFile(f.CAKey)
	if err != nil {
		return fail("CA key: %v", err)
	}
	ca, _, err := pki.ParseCA(caPEM, keyPEM, f.CACert, f.CAKey)
	if err != nil {
		return fail("%v", err)
	}
	sc, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		return fail("server certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := sc.Leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		c.Status, c.Message = StatusFail, fmt.Sprintf("server certificate %s is not valid under the CA: %v", f.ServerCert, err)
		return c, ca
	}
	mode := "persistent"
	if f.Dev {
		mode = "dev"
	}
	srvLeft, caLeft := sc.Leaf.NotAfter.Sub(now), ca.NotAfter.Sub(now)
	c.Status = StatusOK
	c.Message = fmt.Sprintf("%s CA %s valid %s more; server certificate valid %s more", mode, pki.Fingerprint(ca.Raw), days(caLeft), days(srvLeft))
	if srvLeft < warnBefore {
		c.Status = StatusWarn
		c.Items = append(c.Items, fmt.Sprintf("server certificate %s expires %s (in %s): reissue it", f.ServerCert, sc.Leaf.NotAfter.UTC().Format(time.RFC3339), days(srvLeft)))
	}
	if caLeft < warnBefore {
		c.Status = StatusWarn
		c.Items = append(c.Items, fmt.Sprintf("CA %s expires %s (in %s): plan the CA renewal", f.CACert, ca.NotAfter.UTC().Format(time.RFC3339), days(caLeft)))
	}
	return c, ca
}

// days renders a duration in whole days ("12 days", "0 days").
func days(d time.Duration) string {
	n := int(math.Floor(d.Hours() / 24))
	if n == 1 {
		return "1 day"
	}
	return fmt.Sprintf("%d days", n)
}

// CheckReady asks a running control plane's /readyz (client points at it).
func CheckReady(ctx context.Context, client *api.Client, url string) Check {
	c := Check{Name: "server"}
	if err := client.Health(ctx, true); err != nil {
		c.Status, c.Message = StatusFail, fmt.Sprintf("%s/readyz: %v", url, err)
		return c
	}
	c.Status, c.Message = StatusOK, url+" ready"
	return c
}

// SiteThresholds say when a site counts as offline.
type SiteThresholds struct {
	// Grace is added to a site's heartbeat interval (the control plane's default is 10s).
	Grace time.Duration
	// DefaultInterval applies to sites that were never told one (the
	// control plane's minimum heartbeat interval, 10s by default).
	DefaultInterval time.Duration
}

// CheckSites lists enrolled sites, of every tenant, whose last heartbeat is
// older than their interval plus grace (or that never sent one). Sites
// whose certificate was revoked are left out: they are meant to be silent.
func CheckSites(ctx context.Context, st store.Store, now time.Time, th SiteThresholds) Check {
	c := Check{Name: "sites"}
	tenants, err := st.ListTenants(ctx)
	if err != nil {
		c.Status, c.Message = StatusFail, fmt.Sprintf("list tenants: %v", err)
		return c
	}
	revs, err := st.ListRevokedSerials(ctx)
	if err != nil {
		c.Status, c.Message = StatusFail, fmt.Sprintf("list revoked certificates: %v", err)
		return c
	}
	revoked := make(map[string]bool, len(revs))
	for _, r := range revs {
		revoked[r.Serial] = true
	}
	enrolled, offline := 0, 0
	for _, tn := range tenants {
		sites, err := st.ListSites(ctx, tn.ID)
		if err != nil {
			c.Status, c.Message = StatusFail, fmt.Sprintf("list sites of %s: %v", tn.ID, err)
			return c
		}
		for _, s := range sites {
			if s.CertSerial == "" {
				continue // never enrolled: nothing is expected of it yet
			}
			if revoked[s.CertSerial] {
				continue
			}
			enrolled++
			iv := s.HeartbeatInterval
			if iv <= 0 {
				iv = th.DefaultInterval
			}
			switch {
			case s.LastHeartbeat.IsZero():
				offline++
				c.Items = append(c.Items, fmt.Sprintf("%s/%s: enrolled %s ago, never sent a heartbeat", tn.ID, s.Name, ago(now, s.EnrolledAt)))
			case now.Sub(s.LastHeartbeat) > iv+th.Grace:
				offline++
				c.Items = append(c.Items, fmt.Sprintf("%s/%s: offline, last heartbeat %s ago (interval %s)", tn.ID, s.Name, ago(now, s.LastHeartbeat), iv))
			}
		}
	}
	c.Status = StatusOK
	if offline > 0 {
		c.Status = StatusWarn
	}
	c.Message = fmt.Sprintf("%d of %d enrolled sites online", enrolled-offline, enrolled)
	return c
}

func ago(now, t time.Time) string {
	return max(0, now.Sub(t)).Round(time.Second).String()
}

// CheckPlans lists in-progress plans that have not moved (no action
// started or finished) for longer than stuckAfter.
func CheckPlans(ctx context.Context, st store.Store, now time.Time, stuckAfter time.Duration) Check {
	c := Check{Name: "plans"}
	tenants, err := st.ListTenants(ctx)
	if err != nil {
		c.Status, c.Message = StatusFail, fmt.Sprintf("list tenants: %v", err)
		return c
	}
	active := 0
	for _, tn := range tenants {
		plans, err := st.ListPlans(ctx, tn.ID, store.PlanFilter{Status: model.PlanInProgress, Limit: math.MaxInt32})
		if err != nil {
			c.Status, c.Message = StatusFail, fmt.Sprintf("list plans of %s: %v", tn.ID, err)
			return c
		}
		active += len(plans)
		for _, p := range plans {
			if idle := now.Sub(p.UpdatedAt); idle > stuckAfter {
				c.Items = append(c.Items, fmt.Sprintf("%s/%s plan %s: in progress, no progress for %s", tn.ID, p.Plan.Site, shortID(p.Plan.ID), idle.Round(time.Second)))
			}
		}
	}
	c.Status = StatusOK
	if len(c.Items) > 0 {
		c.Status = StatusWarn
	}
	c.Message = fmt.Sprintf("%d plan(s) in progress, %d without progress for more than %s", active, len(c.Items), stuckAfter)
	return c
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// CheckStatuses lists commit statuses that a forge has not accepted for
// longer than after (the poster retries with backoff; a status older than
// that means the forge or its token is failing). Repositories without a
// forge never post, so their statuses do not count.
func CheckStatuses(ctx context.Context, st store.Store, now time.Time, after time.Duration) Check {
	c := Check{Name: "commit statuses"}
	repos, err := st.ListAllRepositories(ctx)
	if err != nil {
		c.Status, c.Message = StatusFail, fmt.Sprintf("list repositories: %v", err)
		return c
	}
	forge := map[string]store.Repository{}
	for _, r := range repos {
		if r.ForgeKind != store.ForgeNone {
			forge[r.ID] = r
		}
	}
	const limit = 1000
	unposted, err := st.UnpostedCommitStatuses(ctx, limit)
	if err != nil {
		c.Status, c.Message = StatusFail, fmt.Sprintf("unposted statuses: %v", err)
		return c
	}
	late := 0
	for _, s := range unposted {
		r, ok := forge[s.RepoID]
		if !ok || now.Sub(s.UpdatedAt) <= after {
			continue
		}
		late++
		c.Items = append(c.Items, fmt.Sprintf("%s/%s %s %s=%s: not accepted by %s for %s", s.Tenant, r.Name, shortID(s.Commit), s.Context, s.State, r.ForgeKind, ago(now, s.UpdatedAt)))
	}
	c.Status = StatusOK
	if late > 0 {
		c.Status = StatusWarn
	}
	more := ""
	if len(unposted) == limit {
		more = " (first 1000 looked at)"
	}
	c.Message = fmt.Sprintf("%d status(es) not posted for more than %s%s", late, after, more)
	return c
}
