package api

import (
	"net/url"
	"strings"
)

// URL path patterns, in net/http (Go 1.22) syntax. Fill the wildcards with Path.
const (
	// Operational (no authentication).
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathMetrics = "/metrics"
	PathCRL     = "/v1/crl" // ?format=pem for PEM; DER otherwise
	PathCA      = "/v1/ca"  // the CA certificate, PEM

	// Agent endpoints. Enroll authenticates with a one-time token, the rest with mTLS.
	PathEnroll        = "/v1/enroll"
	PathAgentRenew    = "/v1/agent/renew"
	PathAgentHB       = "/v1/agent/heartbeat"
	PathAgentPlan     = "/v1/agent/plan" // ?after=<planID>&wait=30s&superseded=1 (see Client.WatchPlan)
	PathAgentResults  = "/v1/agent/results"
	PathAgentLogs     = "/v1/agent/logs"
	PathWebhook       = "/v1/webhooks/{repo}" // forge deliveries; the handler checks signatures
	PathTenants       = "/v1/tenants"         // admin
	PathTenant        = "/v1/tenants/{tenant}"
	PathTokens        = "/v1/tokens" // admin creates any; tenant tokens list their own
	PathToken         = "/v1/tokens/{token}"
	PathRepos         = "/v1/repos"
	PathRepo          = "/v1/repos/{repo}"
	PathRepoReconcile = "/v1/repos/{repo}/reconcile"
	PathRepoStatuses  = "/v1/repos/{repo}/commits/{commit}/statuses"
	PathRepoPreviews  = "/v1/repos/{repo}/previews"
	PathRepoPreview   = "/v1/repos/{repo}/previews/{pr}"
	PathCredentials   = "/v1/credentials" // tenant-owned; the secret is write-only
	PathCredential    = "/v1/credentials/{name}"
	PathNetBird       = "/v1/netbird" // the tenant's NetBird management API; the token is write-only
	PathSites         = "/v1/sites"
	PathSite          = "/v1/sites/{site}"
	PathSiteNetBird   = "/v1/sites/{site}/netbird"
	PathSiteRevoke    = "/v1/sites/{site}/revoke"
	PathSiteEnroll    = "/v1/sites/{site}/enrollment-tokens"
	PathSiteVMs       = "/v1/sites/{site}/vms"
	PathSitePlans     = "/v1/sites/{site}/plans"
	PathPlans         = "/v1/plans" // ?site=&commit=&repo=&status=&limit=
	PathPlan          = "/v1/plans/{plan}"
	PathPlanLogs      = "/v1/plans/{plan}/logs" // ?after=<seq>&follow=true
	PathAudit         = "/v1/audit"             // ?after=<seq>&limit=
	PathAuditVerify   = "/v1/audit/verify"      // admin: recompute the hash chain

	// Content-addressed images. Push is POST with the raw bytes as the body
	// (?name=&sha256= optional); agents fetch over mTLS.
	PathImages     = "/v1/images"
	PathImage      = "/v1/images/{sha256}"
	PathAgentImage = "/v1/agent/images/sha256/{sha256}"

	// A one-time dashboard sign-in link for the calling token.
	PathDashboardSignInCodes = "/v1/dashboard/signin-codes"
)

// TenantHeader lets an admin token act on one tenant's objects.
// Tenant-scoped tokens may omit it; a value naming another tenant is refused.
const TenantHeader = "Nkudo-Tenant"

// Path fills the {wildcards} of pattern with args in order, escaping each.
// Missing args leave the wildcard in place (a bug the server answers with 404).
func Path(pattern string, args ...string) string {
	var b strings.Builder
	rest := pattern
	for _, a := range args {
		i := strings.IndexByte(rest, '{')
		j := strings.IndexByte(rest, '}')
		if i < 0 || j < i {
			break
		}
		b.WriteString(rest[:i])
		b.WriteString(url.PathEscape(a))
		rest = rest[j+1:]
	}
	b.WriteString(rest)
	return b.String()
}
