// Package maintenance owns the control plane's upkeep and the checks an
// operator runs on it: the retention job that keeps growing tables bounded
// (run by `nkudo serve` on one replica at a time), tenant offboarding (`nkudo
// admin tenant delete --purge`) and the health checks behind `nkudo admin
// health`. It works on store.Store and the PKI files; it knows nothing of
// HTTP routing or the command line.
package maintenance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/nkudo/nkudo/store"
)

// TenantContents counts what a tenant owns: what a purge deletes.
type TenantContents struct {
	Tenant           string `json:"tenant"`
	APITokens        int    `json:"apiTokens"`
	EnrollmentTokens int    `json:"enrollmentTokens"`
	Repositories     int    `json:"repositories"`
	Sites            int    `json:"sites"`
	// EnrolledSites have an agent certificate, which a purge revokes.
	EnrolledSites int   `json:"enrolledSites"`
	VMs           int   `json:"vms"` // VMs in the sites' reported inventories
	Plans         int   `json:"plans"`
	LogLines      int64 `json:"logLines"`
	Previews      int   `json:"previews"`
}

// Rows lists the counts as (label, count) pairs in a stable order, for
// printing. Commit statuses are not counted: the store lists them per commit
// only; they go with their repositories.
func (c TenantContents) Rows() [][2]string {
	return [][2]string{
		{"API tokens", fmt.Sprint(c.APITokens)},
		{"enrollment tokens", fmt.Sprint(c.EnrollmentTokens)},
		{"repositories (with their commit statuses)", fmt.Sprint(c.Repositories)},
		{"sites", fmt.Sprint(c.Sites)},
		{"agent certificates to revoke", fmt.Sprint(c.EnrolledSites)},
		{"VMs in site inventories", fmt.Sprint(c.VMs)},
		{"plans (with their actions)", fmt.Sprint(c.Plans)},
		{"execution log lines", fmt.Sprint(c.LogLines)},
		{"pull-request previews", fmt.Sprint(c.Previews)},
	}
}

// SurveyTenant counts what the tenant owns without changing anything.
// ErrNotFound (wrapped) if the tenant does not exist.
func SurveyTenant(ctx context.Context, st store.Store, tenant string) (TenantContents, error) {
	c := TenantContents{Tenant: tenant}
	if _, err := st.GetTenant(ctx, tenant); err != nil {
		return c, fmt.Errorf("survey tenant %s: %w", tenant, err)
	}
	toks, err := st.ListAPITokens(ctx, tenant)
	if err != nil {
		return c, fmt.Errorf("survey tenant %s: %w", tenant, err)
	}
	c.APITokens = len(toks)
	etoks, err := st.ListEnrollmentTokens(ctx, tenant)
	if err != nil {
		return c, fmt.Errorf("survey tenant %s: %w", tenant, err)
	}
	c.EnrollmentTokens = len(etoks)
	repos, err := st.ListRepositories(ctx, tenant)
	if err != nil {
		return c, fmt.Errorf("survey tenant %s: %w", tenant, err)
	}
	c.Repositories = len(repos)
	for _, r := range repos {
		pv, err := st.ListPreviews(ctx, tenant, r.ID)
		if err != nil {
			return c, fmt.Errorf("survey tenant %s: %w", tenant, err)
		}
		c.Previews += len(pv)
	}
	sites, err := st.ListSites(ctx, tenant)
	if err != nil {
		return c, fmt.Errorf("survey tenant %s: %w", tenant, err)
	}
	c.Sites = len(sites)
	for _, s := range sites {
		if s.CertSerial != "" {
			c.EnrolledSites++
		}
	}
	invs, err := st.Inventories(ctx, tenant)
	if err != nil {
		return c, fmt.Errorf("survey tenant %s: %w", tenant, err)
	}
	for _, inv := range invs {
		c.VMs += len(inv.VMs)
	}
	plans, err := st.ListPlans(ctx, tenant, store.PlanFilter{Limit: math.MaxInt32})
	if err != nil {
		return c, fmt.Errorf("survey tenant %s: %w", tenant, err)
	}
	c.Plans = len(plans)
	for _, p := range plans {
		n, err := countLogLines(ctx, st, tenant, p.Plan.ID)
		if err != nil {
			return c, fmt.Errorf("survey tenant %s: %w", tenant, err)
		}
		c.LogLines += n
	}
	return c, nil
}

// countLogLines pages through a plan's log (the store has no count query).
func countLogLines(ctx context.Context, st store.Store, tenant, plan string) (int64, error) {
	const page = 5000
	var n int64
	after := int64(0)
	for {
		lines, err := st.Logs(ctx, tenant, plan, after, page)
		if errors.Is(err, store.ErrNotFound) {
			return n, nil // pruned meanwhile
		}
		if err != nil {
			return 0, err
		}
		n += int64(len(lines))
		if len(lines) < page {
			return n, nil
		}
		after = lines[len(lines)-1].Seq
	}
}

// PurgeResult says what PurgeTenant did.
type PurgeResult struct {
	Contents TenantContents `json:"contents"`
	// Revoked are the agent certificate serials revoked, as "site:serial".
	Revoked []string `json:"revoked,omitempty"`
}

// PurgeTenant offboards a tenant. It first revokes the current agent
// certificate of every enrolled site: revocations are kept after the
// tenant is gone, so a still-running agent is refused on its next request
// (the control plane also refuses every older certificate of a site issued
// before a revocation), even if a tenant and site of the same names are
// created again later. Then it deletes the tenant, which removes its
// tokens, repositories, sites, inventories, plans, logs, statuses and
// previews, and finally appends a "tenant.purge" audit event with the
// counts. Each step is audited; the audit log itself is never purged.
//
// A purge that fails half-way can be run again: revoking twice is not an
// error. ErrNotFound (wrapped) if the tenant does not exist.
func PurgeTenant(ctx context.Context, st store.Store, actor store.Actor, tenant string, now time.Time) (PurgeResult, error) {
	var res PurgeResult
	c, err := SurveyTenant(ctx, st, tenant)
	if err != nil {
		return res, err
	}
	res.Contents = c
	sites, err := st.ListSites(ctx, tenant)
	if err != nil {
		return res, fmt.Errorf("purge tenant %s: %w", tenant, err)
	}
	for _, s := range sites {
		// Every certificate the site was issued, not only the current one:
		// an older one may still be within its validity.
		serials, err := st.RevokeSiteCertificates(ctx, actor, tenant, s.Name, now)
		if err != nil {
			return res, fmt.Errorf("purge tenant %s: revoke certificates of site %s: %w", tenant, s.Name, err)
		}
		if s.CertSerial != "" && !slices.Contains(serials, s.CertSerial) {
			// Revoked by an earlier, interrupted purge (or a revoke): still listed.
			serials = append(serials, s.CertSerial)
		}
		for _, sr := range serials {
			res.Revoked = append(res.Revoked, s.Name+":"+sr)
		}
	}
	if err := st.DeleteTenant(ctx, actor, tenant); err != nil {
		return res, fmt.Errorf("purge tenant %s: %w", tenant, err)
	}
	detail, err := auditDetail(map[string]any{"deleted": c, "revokedCertificates": len(res.Revoked)})
	if err != nil {
		return res, err
	}
	if _, err := st.AppendAudit(ctx, store.AuditEvent{
		Tenant: tenant, Actor: actor.String(), Action: "tenant.purge", Object: "tenant/" + tenant, Detail: detail,
	}); err != nil {
		return res, fmt.Errorf("purge tenant %s: deleted, but the audit summary failed: %w", tenant, err)
	}
	return res, nil
}

func auditDetail(v any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode audit detail: %w", err)
	}
	return b, nil
}
