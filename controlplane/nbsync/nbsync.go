// Package nbsync keeps each tenant's NetBird account in step with its
// Sites: for every site whose Site manifest has a netbird section it mints
// setup keys on demand, makes the peer's group membership equal the Site's
// groups (correcting and reporting drift) and removes the peers of deleted
// sites, through the tenant's NetBird integration. It runs beside the
// GitOps loop, never inside a reconcile or a heartbeat, so a NetBird
// outage delays only NetBird: failures are recorded per site and retried
// with backoff.
package nbsync

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/nkudo/nkudo/netbird"
	"github.com/nkudo/nkudo/store"
)

// Desired says which NetBird groups a site's Site manifest asks for; ok is
// false when that is not known or the Site has no netbird section.
type Desired interface {
	DesiredNetBirdGroups(ctx context.Context, tenant, site string) (groups []string, ok bool, err error)
}

// Options configure a Syncer.
type Options struct {
	Store store.Store
	// Desired answers the Site's groups; nil means the desired state the
	// GitOps loop recorded in the store with the site's last plan.
	Desired Desired
	// HTTP sends the management API calls; it must dial through the
	// egress policy.
	HTTP   *http.Client
	Logger *slog.Logger
	// AllowInsecureCredentials lets the token travel over plain http
	// (local development, as for repository credentials).
	AllowInsecureCredentials bool
	// Interval is the time between passes; zero means 30s. A tenant whose
	// pass failed waits longer, doubling up to MaxBackoff (zero: 10m).
	Interval   time.Duration
	MaxBackoff time.Duration
	// TenantTimeout bounds one tenant's pass (zero: 2m), so a management
	// URL that answers slowly or never holds back only its own tenant.
	TenantTimeout time.Duration
	// Holder names this replica in the lease that lets one replica sync at
	// a time ("": host, pid and a random suffix).
	Holder string
}

// Lease is the store lease the replica doing the passes holds: two
// replicas minting keys for the same site would hand out two keys.
const Lease = "netbird-sync"

// Syncer runs the passes.
type Syncer struct {
	o   Options
	log *slog.Logger

	// waits holds back tenants whose last pass failed (Run's goroutine only).
	waits map[string]*wait
}

type wait struct {
	until   time.Time
	backoff time.Duration
}

// New builds a Syncer.
func New(o Options) *Syncer {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Interval == 0 {
		o.Interval = 30 * time.Second
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 10 * time.Minute
	}
	if o.Holder == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		o.Holder = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	return &Syncer{o: o, log: o.Logger.With("component", "netbird"), waits: map[string]*wait{}}
}

// SiteResult is one site's outcome in a pass.
type SiteResult struct {
	Site string
	netbird.SiteResult
	Deleted bool // the site is gone and its peer was removed
	Err     error
}

// ErrNoIntegration means the tenant has no NetBird integration.
var ErrNoIntegration = errors.New("no NetBird integration")

// client builds the tenant's management API client.
func (s *Syncer) client(ctx context.Context, tenant string) (*netbird.Client, error) {
	n, err := s.o.Store.GetNetBirdIntegration(ctx, tenant)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNoIntegration
	}
	if err != nil {
		return nil, err
	}
	cred, token, err := s.o.Store.CredentialSecret(ctx, tenant, n.Credential)
	if err != nil {
		return nil, fmt.Errorf("netbird token: %w", err)
	}
	if cred.Kind != store.CredentialToken {
		return nil, fmt.Errorf("netbird credential %q: a %s credential, want a token", cred.Name, cred.Kind)
	}
	if err := store.CheckCredentialUse(cred, n.URL, s.o.AllowInsecureCredentials); err != nil {
		return nil, err
	}
	return &netbird.Client{URL: n.URL, Token: netbird.Secret(token.Reveal()), HTTP: s.o.HTTP}, nil
}

// netbirdIP is the NetBird IP in a site's last host facts.
func netbirdIP(facts json.RawMessage) string {
	var f struct {
		NetBird struct {
			IP string `json:"ip"`
		} `json:"netbird"`
	}
	_ = json.Unmarshal(facts, &f)
	return f.NetBird.IP
}

func toState(p store.NetBirdPeer) netbird.SiteState {
	return netbird.SiteState{KeyID: p.KeyID, Key: netbird.Secret(p.SetupKey.Reveal()), KeyGroups: p.KeyGroups, PeerID: p.PeerID, Groups: p.Groups}
}

// desired is the groups the Site asks for; ok is false when its desired
// state is not known or has no netbird section (its peer is left alone).
func (s *Syncer) desired(ctx context.Context, tenant, site string) ([]string, bool, error) {
	if s.o.Desired != nil {
		return s.o.Desired.DesiredNetBirdGroups(ctx, tenant, site)
	}
	d, err := s.o.Store.DesiredState(ctx, tenant, site)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if d.Document == nil || d.Document.Spec.NetBird == nil {
		return nil, false, nil
	}
	return d.Document.Spec.NetBird.Groups, true, nil
}

// SyncTenant runs one pass over the tenant's sites. It returns
// ErrNoIntegration when the tenant has none, an error when the pass could
// not start, and otherwise each site's outcome (a site's failure is in its
// SiteResult and recorded in the store).
func (s *Syncer) SyncTenant(ctx context.Context, tenant string) ([]SiteResult, error) {
	c, err := s.client(ctx, tenant)
	if err != nil {
		return nil, err
	}
	sites, err := s.o.Store.ListSites(ctx, tenant)
	if err != nil {
		return nil, err
	}
	rows, err := s.o.Store.ListNetBirdPeers(ctx, tenant)
	if err != nil {
		return nil, err
	}
	known := map[string]store.NetBirdPeer{}
	for _, r := range rows {
		known[r.Site] = r
	}
	var out []SiteResult
	live := map[string]bool{}
	for _, site := range sites {
		live[site.Name] = true
		groups, ok, err := s.desired(ctx, tenant, site.Name)
		if err != nil {
			out = append(out, SiteResult{Site: site.Name, Err: fmt.Errorf("desired groups: %w", err)})
			continue
		}
		if !ok {
			continue
		}
		row := known[site.Name]
		row.Tenant, row.Site = tenant, site.Name
		st, res, err := c.ReconcileSite(ctx, tenant, site.Name, groups, netbirdIP(site.Facts), toState(row))
		r := SiteResult{Site: site.Name, SiteResult: res, Err: err}
		out = append(out, r)
		next := store.NetBirdPeer{Tenant: tenant, Site: site.Name, KeyID: st.KeyID, SetupKey: store.Secret(st.Key.Reveal()),
			KeyGroups: st.KeyGroups, PeerID: st.PeerID, Groups: st.Groups, LastChange: row.LastChange}
		if !res.Change.Empty() {
			next.LastChange = res.Change.String()
		}
		if err != nil {
			next.LastError = err.Error()
			s.log.Warn("netbird sync of a site failed; retried", "tenant", tenant, "site", site.Name, "err", err)
		}
		switch {
		case res.Drift:
			s.log.Warn("netbird membership drifted and was restored", "tenant", tenant, "site", site.Name, "change", res.Change.String())
		case !res.Change.Empty():
			s.log.Info("netbird membership changed", "tenant", tenant, "site", site.Name, "change", res.Change.String())
		}
		if res.Minted {
			s.log.Info("netbird setup key minted for the site", "tenant", tenant, "site", site.Name, "groups", groups)
		}
		if perr := s.o.Store.PutNetBirdPeer(ctx, next); perr != nil {
			return out, perr
		}
	}
	for _, row := range rows {
		if live[row.Site] {
			continue
		}
		r := SiteResult{Site: row.Site, Deleted: true}
		if r.Err = c.DeleteSite(ctx, toState(row)); r.Err == nil {
			r.Err = s.o.Store.DeleteNetBirdPeer(ctx, tenant, row.Site)
			s.log.Info("netbird peer of a deleted site removed", "tenant", tenant, "site", row.Site)
		}
		out = append(out, r)
	}
	return out, nil
}

// leaseTTL outlives one tenant's pass (the lease is renewed before each
// tenant); a replica that died holding the lease is replaced after it.
func (s *Syncer) leaseTTL() time.Duration {
	return max(2*s.o.Interval, time.Minute, s.tenantTimeout()+s.o.Interval)
}

func (s *Syncer) tenantTimeout() time.Duration {
	if s.o.TenantTimeout > 0 {
		return s.o.TenantTimeout
	}
	return 2 * time.Minute
}

// RunOnce makes one pass over every tenant whose backoff has passed, when
// this replica holds the lease; ran is false when another replica does.
func (s *Syncer) RunOnce(ctx context.Context) (ran bool, err error) {
	ok, err := s.o.Store.AcquireLease(ctx, Lease, s.o.Holder, s.leaseTTL())
	if err != nil || !ok {
		return false, err
	}
	tenants, err := s.o.Store.ListTenants(ctx)
	if err != nil {
		return true, fmt.Errorf("netbird sync: list tenants: %w", err)
	}
	now := time.Now()
	for _, tn := range tenants {
		w := s.waits[tn.ID]
		if w != nil && now.Before(w.until) {
			continue
		}
		// Renewed per tenant: a pass over many slow tenants can outlast
		// one TTL, and another replica must not start syncing meanwhile.
		if ok, err := s.o.Store.AcquireLease(ctx, Lease, s.o.Holder, s.leaseTTL()); err != nil || !ok {
			return true, err
		}
		tctx, cancel := context.WithTimeout(ctx, s.tenantTimeout())
		res, err := s.SyncTenant(tctx, tn.ID)
		cancel()
		failed := err != nil && !errors.Is(err, ErrNoIntegration)
		for _, r := range res {
			failed = failed || r.Err != nil
		}
		if err != nil && failed && ctx.Err() == nil {
			s.log.Warn("netbird sync failed; retried with backoff", "tenant", tn.ID, "err", err)
		}
		if !failed {
			delete(s.waits, tn.ID)
			continue
		}
		if w == nil {
			w = &wait{backoff: s.o.Interval}
			s.waits[tn.ID] = w
		}
		w.backoff = min(w.backoff*2, s.o.MaxBackoff)
		w.until = now.Add(w.backoff)
	}
	return true, nil
}

// Run makes passes until ctx ends, then gives the lease up.
func (s *Syncer) Run(ctx context.Context) {
	defer func() {
		_ = s.o.Store.ReleaseLease(context.WithoutCancel(ctx), Lease, s.o.Holder)
	}()
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		if _, err := s.RunOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("netbird sync pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
