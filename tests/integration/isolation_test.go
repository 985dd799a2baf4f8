package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
)

// bravoSecret marks every piece of tenant bravo's data; no answer to tenant
// alpha may contain it.
const bravoSecret = "bravo-secret"

// isoCredential names bravo's credential (a name alpha could guess).
const isoCredential = "deploy-key"

// isoFixture is two tenants: alpha (sites a1, a2, enrolled) and bravo (site
// b1 enrolled and reporting, b2 with an unused enrollment token), with a
// repository, plans, logs, a commit status and a preview on bravo's side.
type isoFixture struct {
	env            *cptest.Env
	alpha, bravo   cptest.Tenant
	a1, a2, b1     *cptest.Agent
	repoB          api.Repository
	planA2, planB  model.Plan
	tokenB         string // bravo's API token ID
	enrollB2       api.EnrollmentToken
	bravoAuditSeqs int
	imageB         api.PushImageResponse // bravo's image, named after bravoSecret
	alphaUI        *cptest.Browser       // alpha's dashboard session
}

func newIsoFixture(t *testing.T, o cptest.Options) *isoFixture {
	o.Configure = func(co *controlplane.Options) { co.EnrollRate = rate.Inf }
	env := cptest.Start(t, o)
	ctx := t.Context()
	f := &isoFixture{env: env, alpha: env.NewTenant("alpha"), bravo: env.NewTenant("bravo")}
	f.a1, f.a2, f.b1 = env.Enroll("alpha", "a1"), env.Enroll("alpha", "a2"), env.Enroll("bravo", "b1")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := f.b1.Client.Heartbeat(ctx, api.HeartbeatRequest{
		Facts: api.HostFacts{Hostname: bravoSecret + "-host"},
		VMs:   []model.ObservedVM{{Name: bravoSecret + "-vm", State: model.VMRunning, Managed: true, CPUs: 1, MemoryMiB: 128}},
	})
	must(err)
	must(f.bravo.Client.SetNetBird(ctx, "b1", api.SetNetBirdRequest{ManagementURL: "https://" + bravoSecret + ".example.net", SetupKey: bravoSecret + "-key"}))
	_, err = f.bravo.Client.PutCredential(ctx, isoCredential, api.PutCredentialRequest{Kind: api.CredentialToken, Host: "git.example.net", Secret: bravoSecret + "-token"})
	must(err)
	f.repoB, err = f.bravo.Client.CreateRepo(ctx, api.CreateRepoRequest{Name: "fleet", URL: "https://git.example.net/" + bravoSecret + "-repo.git", WebhookSecret: bravoSecret + "-hook", CredentialsRef: isoCredential})
	must(err)
	st := env.Store()
	sys := store.Actor{Kind: store.ActorSystem, ID: "test"}
	_, err = st.PutNetBirdIntegration(ctx, sys, store.NetBirdIntegration{Tenant: "bravo", URL: "https://git.example.net/" + bravoSecret + "-netbird", Credential: isoCredential})
	must(err)
	f.planB = cptest.CreatePlan("bravo", "b1", 1, bravoSecret+"-vm2")
	_, err = st.StorePlan(ctx, sys, f.planB, f.repoB.ID, time.Now())
	must(err)
	f.planA2 = cptest.CreatePlan("alpha", "a2", 0, "alpha-vm")
	_, err = st.StorePlan(ctx, sys, f.planA2, "", time.Now())
	must(err)
	_, err = f.b1.Client.SendLogs(ctx, []api.LogLine{{PlanID: f.planB.ID, Seq: 1, Time: time.Now(), Stream: api.StreamStdout, Line: bravoSecret + "-log"}})
	must(err)
	_, err = st.SetCommitStatus(ctx, "bravo", store.CommitStatus{RepoID: f.repoB.ID, Commit: "c0ffee", Context: "nkudo/plan", State: store.StateSuccess, Description: bravoSecret + "-status"})
	must(err)
	must(st.PutPreview(ctx, "bravo", store.Preview{RepoID: f.repoB.ID, PR: 7, Commit: "c0ffee", Summary: bravoSecret + "-preview", PlanText: bravoSecret}))
	toks, err := f.bravo.Client.ListTokens(ctx)
	must(err)
	f.tokenB = toks[0].ID
	env.NewSite("bravo", "b2")
	f.enrollB2 = env.EnrollmentToken("bravo", "b2")
	img := []byte(bravoSecret + "-image")
	f.imageB, err = f.bravo.Client.PushImage(ctx, bravoSecret+"-image", "", int64(len(img)), bytes.NewReader(img))
	must(err)
	evs, err := st.ListAudit(ctx, "bravo", 0, 10000)
	must(err)
	f.bravoAuditSeqs = len(evs)
	f.alphaUI = env.SignInDashboard(f.alpha.Token, "")
	return f
}

// wildcard fills a route wildcard with the bravo object it names.
func (f *isoFixture) wildcard(name string) string {
	switch name {
	case "site":
		return "b1"
	case "repo":
		return f.repoB.ID
	case "plan":
		return f.planB.ID
	case "tenant":
		return "bravo"
	case "token":
		return f.tokenB
	case "commit":
		return "c0ffee"
	case "pr":
		return "7"
	case "name":
		return isoCredential
	case "sha256":
		return f.imageB.SHA256
	}
	return "unknown-" + name
}

func (f *isoFixture) fill(pattern string) string {
	var args []string
	for rest := pattern; ; {
		i, j := strings.IndexByte(rest, '{'), strings.IndexByte(rest, '}')
		if i < 0 || j < i {
			break
		}
		args = append(args, f.wildcard(rest[i+1:j]))
		rest = rest[j+1:]
	}
	return api.Path(pattern, args...)
}

// isoCaller is who sends a isoProbe.
type isoCaller int

const (
	isoAnonymous isoCaller = iota
	isoAlphaToken
	isoAlphaAsBravo // alpha's token naming bravo in the tenant header
	isoAgentA1
	isoAlphaSession // alpha's dashboard session cookie
)

func (c isoCaller) String() string {
	return [...]string{"anonymous", "alpha token", "alpha token as bravo", "a1 certificate", "alpha session"}[c]
}

// isoProbe is one request and the statuses that count as rejected/isolated.
type isoProbe struct {
	name  string
	who   isoCaller
	path  string // "" = the route pattern filled with bravo's objects
	query string
	body  string
	want  []int
	// check, when set, inspects a successful answer further.
	check func(t *testing.T, body string)
	// firstEvent reads an event stream that does not end by itself only up
	// to its first event.
	firstEvent bool
}

func (f *isoFixture) send(t *testing.T, rt controlplane.Route, p isoProbe) (int, string) {
	t.Helper()
	path := p.path
	if path == "" {
		path = f.fill(rt.Pattern)
	}
	if p.query != "" {
		path += "?" + p.query
	}
	var cert *tls.Certificate
	token, tenant := "", ""
	switch p.who {
	case isoAlphaToken:
		token = f.alpha.Token
	case isoAlphaAsBravo:
		token, tenant = f.alpha.Token, "bravo"
	case isoAgentA1:
		cert = &f.a1.Cert
	}
	hc := f.env.HTTPClient(cert)
	req, err := http.NewRequestWithContext(t.Context(), rt.Method, f.env.URL+path, strings.NewReader(p.body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if tenant != "" {
		req.Header.Set(api.TenantHeader, tenant)
	}
	if p.who == isoAlphaSession {
		req.AddCookie(f.alphaUI.Cookie)
	}
	if rt.Method == "POST" && strings.HasPrefix(rt.Pattern, "/ui/") {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", rt.Method, path, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if p.firstEvent && resp.StatusCode == http.StatusOK {
		rd := bufio.NewReader(resp.Body)
		for !strings.HasSuffix(b.String(), "\n\n") {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("stream ended before its first event: %v (read %q)", err, b.String())
			}
			b.WriteString(line)
		}
		return resp.StatusCode, b.String()
	}
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b.String()
}

// routeProbes are the hand-written probes per route: bravo's objects
// targeted by alpha's token, and other sites' objects by site a1's
// certificate. Every route of the server must have an entry.
func (f *isoFixture) routeProbes() map[string][]isoProbe {
	notFound := []int{http.StatusNotFound}
	forbidden := []int{http.StatusForbidden}
	noBravo := func(t *testing.T, body string) {
		t.Helper()
		if strings.Contains(body, "bravo") {
			t.Errorf("answer mentions tenant bravo: %s", body)
		}
	}
	a1Result := func(plan model.Plan) string {
		b, _ := json.Marshal(api.ResultsRequest{Results: []api.ActionResult{{PlanID: plan.ID, ActionID: plan.Actions[0].ID, Status: model.ActionFailed, Error: "x"}}})
		return string(b)
	}
	a1Logs := func(plan model.Plan) string {
		b, _ := json.Marshal(api.LogsRequest{Lines: []api.LogLine{{PlanID: plan.ID, Seq: 2, Time: time.Now(), Stream: api.StreamStdout, Line: "injected"}}})
		return string(b)
	}
	enroll := func(token, tenant, site string) string {
		key, _ := pki.NewKey()
		csr, _ := pki.NewCSR(key, "x")
		b, _ := json.Marshal(api.EnrollRequest{Token: token, CSR: string(csr), Tenant: tenant, Site: site})
		return string(b)
	}
	public := func(check func(*testing.T, string)) []isoProbe {
		return []isoProbe{{name: "no tenant data in public answer", who: isoAnonymous, want: []int{http.StatusOK}, check: check}}
	}
	noSecret := func(t *testing.T, body string) {
		t.Helper()
		if strings.Contains(body, bravoSecret) {
			t.Errorf("public answer contains bravo's data")
		}
	}
	return map[string][]isoProbe{
		"GET /healthz": public(noSecret),
		"GET /readyz":  public(noSecret),
		"GET /metrics": public(noSecret),
		"GET /v1/ca":   public(noSecret),
		"GET /v1/crl":  public(noSecret),
		"POST /v1/enroll": {
			{name: "bravo token claimed for alpha's site", who: isoAnonymous, body: enroll(f.enrollB2.Token, "alpha", "a1"), want: []int{http.StatusUnauthorized}},
			{name: "bravo token for another bravo site", who: isoAnonymous, body: enroll(f.enrollB2.Token, "bravo", "b1"), want: forbidden},
		},
		"POST /v1/agent/renew": {{name: "renewal keeps a1's identity", who: isoAgentA1, body: func() string {
			key, _ := pki.NewKey()
			csr, _ := pki.NewCSR(key, "bravo/b1")
			b, _ := json.Marshal(api.RenewRequest{CSR: string(csr)})
			return string(b)
		}(), want: []int{http.StatusOK}, check: func(t *testing.T, body string) {
			var cr api.CertResponse
			if err := json.Unmarshal([]byte(body), &cr); err != nil {
				t.Fatal(err)
			}
			cs, err := pki.ParseCertPEM([]byte(cr.Certificate))
			if err != nil {
				t.Fatal(err)
			}
			if id, _ := pki.IdentityFromCert(cs[0]); id != (pki.Identity{Tenant: "alpha", Site: "a1"}) {
				t.Errorf("renewed identity %v, want alpha/a1", id)
			}
		}}},
		"POST /v1/agent/heartbeat": {{name: "reports land on a1 only", who: isoAgentA1, body: `{"protocolVersion":1,"facts":{"hostname":"a1-host"},"vms":[{"name":"b1-vm","state":"Running","managed":true,"cpus":1,"memoryMiB":1}]}`, want: []int{http.StatusOK}}},
		"GET /v1/agent/plan":       {{name: "a1 sees neither a2's nor b1's plan", who: isoAgentA1, query: "wait=0s", want: []int{http.StatusNoContent}}},
		"POST /v1/agent/results": {
			{name: "result for bravo's plan", who: isoAgentA1, body: a1Result(f.planB), want: notFound},
			{name: "result for a2's plan", who: isoAgentA1, body: a1Result(f.planA2), want: notFound},
		},
		"POST /v1/agent/logs": {
			{name: "logs for bravo's plan", who: isoAgentA1, body: a1Logs(f.planB), want: notFound},
			{name: "logs for a2's plan", who: isoAgentA1, body: a1Logs(f.planA2), want: notFound},
		},
		"POST /v1/webhooks/{repo}": {{name: "unsigned delivery to bravo's repo", who: isoAlphaToken, body: `{}`, want: []int{http.StatusNotImplemented, http.StatusUnauthorized, http.StatusBadRequest, http.StatusNotFound, http.StatusForbidden}}},

		"POST /v1/tenants":            {{name: "tenant token cannot create tenants", who: isoAlphaToken, body: `{"id":"evil"}`, want: forbidden}},
		"GET /v1/tenants":             {{name: "tenant token cannot list tenants", who: isoAlphaToken, want: forbidden}},
		"GET /v1/tenants/{tenant}":    {{name: "bravo's tenant record", who: isoAlphaToken, want: notFound}},
		"DELETE /v1/tenants/{tenant}": {{name: "delete bravo", who: isoAlphaToken, want: forbidden}},
		"POST /v1/tokens":             {{name: "mint a token for bravo", who: isoAlphaToken, body: `{"tenant":"bravo"}`, want: forbidden}},
		"GET /v1/tokens":              {{name: "lists alpha's tokens only", who: isoAlphaToken, want: []int{http.StatusOK}, check: noBravo}},
		"DELETE /v1/tokens/{token}":   {{name: "delete bravo's token", who: isoAlphaToken, want: notFound}},

		"POST /v1/repos": {
			{name: "creates in alpha only", who: isoAlphaToken, body: `{"name":"iso","url":"https://git.example.net/iso.git","webhookSecret":"s"}`, want: []int{http.StatusCreated}, check: noBravo},
			{name: "with bravo's credential", who: isoAlphaToken, body: `{"name":"iso2","url":"https://git.example.net/iso2.git","webhookSecret":"s","credentialsRef":"` + isoCredential + `"}`, want: []int{http.StatusBadRequest}},
			{name: "with bravo's forge credential", who: isoAlphaToken, body: `{"name":"iso3","url":"https://git.example.net/iso3.git","webhookSecret":"s","forgeKind":"gitea","forgeApiUrl":"https://git.example.net/api/v1","forgeProject":"a/b","forgeCredentialsRef":"` + isoCredential + `"}`, want: []int{http.StatusBadRequest}},
		},
		"GET /v1/credentials":                            {{name: "lists alpha's credentials only", who: isoAlphaToken, want: []int{http.StatusOK}, check: func(t *testing.T, body string) { noBravo(t, body); noSecret(t, body) }}},
		"PUT /v1/credentials/{name}":                     {{name: "creates in alpha only", who: isoAlphaToken, path: api.Path(api.PathCredential, "iso-cred"), body: `{"kind":"token","host":"git.example.net","secret":"alpha-token"}`, want: []int{http.StatusOK}, check: noBravo}},
		"DELETE /v1/credentials/{name}":                  {{name: "delete bravo's credential", who: isoAlphaToken, want: notFound}},
		"GET /v1/netbird":                                {{name: "bravo's NetBird integration", who: isoAlphaToken, want: notFound, check: noBravo}},
		"PUT /v1/netbird":                                {{name: "set a NetBird integration on loopback", who: isoAlphaToken, body: `{"url":"https://127.0.0.1:1","token":"nbp_x"}`, want: []int{http.StatusBadRequest}, check: noBravo}},
		"DELETE /v1/netbird":                             {{name: "delete bravo's NetBird integration", who: isoAlphaToken, want: notFound}},
		"GET /v1/repos":                                  {{name: "lists alpha's repos only", who: isoAlphaToken, want: []int{http.StatusOK}, check: noBravo}},
		"GET /v1/repos/{repo}":                           {{name: "bravo's repo", who: isoAlphaToken, want: notFound}},
		"PATCH /v1/repos/{repo}":                         {{name: "update bravo's repo", who: isoAlphaToken, body: `{"suspended":true}`, want: notFound}},
		"DELETE /v1/repos/{repo}":                        {{name: "delete bravo's repo", who: isoAlphaToken, want: notFound}},
		"POST /v1/repos/{repo}/reconcile":                {{name: "reconcile bravo's repo", who: isoAlphaToken, body: `{}`, want: notFound}},
		"GET /v1/repos/{repo}/commits/{commit}/statuses": {{name: "bravo's statuses", who: isoAlphaToken, want: notFound}},
		"GET /v1/repos/{repo}/previews":                  {{name: "bravo's previews", who: isoAlphaToken, want: notFound}},
		"GET /v1/repos/{repo}/previews/{pr}":             {{name: "bravo's preview", who: isoAlphaToken, want: notFound}},

		"POST /v1/sites":                          {{name: "creates in alpha only", who: isoAlphaToken, body: `{"name":"b1"}`, want: []int{http.StatusCreated}, check: noBravo}},
		"GET /v1/sites":                           {{name: "lists alpha's sites only", who: isoAlphaToken, want: []int{http.StatusOK}, check: noBravo}},
		"GET /v1/sites/{site}":                    {{name: "bravo's site", who: isoAlphaToken, path: api.Path(api.PathSite, "b2"), want: notFound}},
		"DELETE /v1/sites/{site}":                 {{name: "delete bravo's site", who: isoAlphaToken, path: api.Path(api.PathSite, "b2"), want: notFound}},
		"PUT /v1/sites/{site}/netbird":            {{name: "set bravo's NetBird key", who: isoAlphaToken, path: api.Path(api.PathSiteNetBird, "b2"), body: `{"managementUrl":"https://evil.example.net","setupKey":"evil"}`, want: notFound}},
		"POST /v1/sites/{site}/revoke":            {{name: "revoke bravo's site", who: isoAlphaToken, path: api.Path(api.PathSiteRevoke, "b2"), body: `{}`, want: notFound}},
		"POST /v1/sites/{site}/enrollment-tokens": {{name: "enrollment token for bravo's site", who: isoAlphaToken, path: api.Path(api.PathSiteEnroll, "b2"), body: `{}`, want: notFound}},
		"GET /v1/sites/{site}/vms":                {{name: "bravo's VMs", who: isoAlphaToken, path: api.Path(api.PathSiteVMs, "b2"), want: notFound}},
		"GET /v1/sites/{site}/plans":              {{name: "bravo's site plans", who: isoAlphaToken, path: api.Path(api.PathSitePlans, "b2"), want: notFound}},
		"GET /v1/plans":                           {{name: "lists alpha's plans only", who: isoAlphaToken, query: "site=b1", want: []int{http.StatusOK}, check: noBravo}},
		"GET /v1/plans/{plan}":                    {{name: "bravo's plan", who: isoAlphaToken, want: notFound}},
		"GET /v1/plans/{plan}/logs":               {{name: "bravo's logs", who: isoAlphaToken, want: notFound}, {name: "bravo's logs followed", who: isoAlphaToken, query: "follow=true", want: notFound}},
		"GET /v1/audit":                           {{name: "alpha's events only", who: isoAlphaToken, want: []int{http.StatusOK}, check: noBravo}},
		"GET /v1/audit/verify":                    {{name: "installation-wide check is admin only", who: isoAlphaToken, want: forbidden}},

		"GET /v1/agent/images/sha256/{sha256}": {{name: "a1 fetches bravo's image", who: isoAgentA1, want: notFound}},
		"POST /v1/images":                      {{name: "pushes into alpha only", who: isoAlphaToken, query: "name=alpha-image", body: "alpha image bytes", want: []int{http.StatusCreated}, check: noBravo}},
		"GET /v1/images":                       {{name: "lists alpha's images only", who: isoAlphaToken, want: []int{http.StatusOK}, check: noBravo}},
		"GET /v1/images/{sha256}":              {{name: "bravo's image", who: isoAlphaToken, want: notFound}},
		"DELETE /v1/images/{sha256}":           {{name: "delete bravo's image", who: isoAlphaToken, want: notFound}},
		"GET /{$}":                             {{name: "sign-in page", who: isoAnonymous, path: "/", want: []int{http.StatusOK}, check: noSecret}},
		"GET /ui/assets/{file}":                {{name: "stylesheet", who: isoAnonymous, path: "/ui/assets/style.css", want: []int{http.StatusOK}, check: noSecret}},
		"POST /ui/signin":                      {{name: "alpha token naming bravo", who: isoAnonymous, body: "token=" + f.alpha.Token + "&tenant=bravo", want: forbidden}},
		"POST /ui/signout":                     {{name: "sign-out without the form token", who: isoAlphaSession, body: "csrf=wrong", want: forbidden}},
		"GET /ui/fleet":                        {{name: "lists alpha's sites only", who: isoAlphaSession, want: []int{http.StatusOK}, check: noBravo}},
		"GET /ui/sites/{site}":                 {{name: "bravo's site page", who: isoAlphaSession, path: "/ui/sites/b2", want: notFound}},
		"GET /ui/plans/{plan}":                 {{name: "bravo's plan page", who: isoAlphaSession, want: notFound}},
		"GET /ui/plans/{plan}/events":          {{name: "bravo's plan stream", who: isoAlphaSession, want: notFound}},
		"GET /ui/repos":                        {{name: "lists alpha's repositories only", who: isoAlphaSession, want: []int{http.StatusOK}, check: noBravo}},
		"GET /ui/repos/{repo}":                 {{name: "bravo's repository page", who: isoAlphaSession, want: notFound}},
		"POST /ui/repos/{repo}/reconcile": {
			{name: "reconcile bravo's repository with alpha's form token", who: isoAlphaSession, body: "csrf=" + f.alphaUI.CSRF, want: notFound},
			{name: "reconcile without the form token", who: isoAlphaSession, body: "csrf=wrong", want: forbidden},
		},
		"GET /ui/audit":                   {{name: "a tenant session cannot read the audit log", who: isoAlphaSession, want: forbidden}},
		"GET /ui/fleet/events":            {{name: "streams alpha's sites only", who: isoAlphaSession, want: []int{http.StatusOK}, check: noBravo, firstEvent: true}},
		"GET /ui/signin/code":             {{name: "sign-in link form", who: isoAnonymous, query: "code=made-up", want: []int{http.StatusOK}, check: noSecret}},
		"POST /ui/signin/code":            {{name: "a made-up code without the form cookie", who: isoAnonymous, body: "code=made-up&csrf=x", want: forbidden}},
		"POST /v1/dashboard/signin-codes": {{name: "a link for alpha's own token", who: isoAlphaToken, body: `{}`, want: []int{http.StatusCreated}, check: noBravo}},
	}
}

// TestCrossTenantIsolationRejected iterates the server's own route table:
// every route must have probes here (a new route fails the test until it
// gets one), and every route also gets the generic probes for its kind of
// authentication. Alpha's token and site a1's certificate never reach
// bravo's objects or another site's: 404 (or 403 for scope), no data, and
// nothing of bravo's changes.
func TestCrossTenantIsolationRejected(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		f := newIsoFixture(t, o)
		table := f.routeProbes()
		routes := f.env.Server().Routes()
		seen := map[string]bool{}
		for _, rt := range routes {
			key := rt.Method + " " + rt.Pattern
			seen[key] = true
			probes, ok := table[key]
			if !ok {
				t.Errorf("route %s has no isolation isoProbe: add one to routeProbes", key)
				continue
			}
			probes = append(probes, isoGenericProbes(rt)...)
			for _, p := range probes {
				t.Run(key+"/"+p.who.String()+"/"+p.name, func(t *testing.T) {
					status, body := f.send(t, rt, p)
					if !slices.Contains(p.want, status) {
						t.Fatalf("status %d, want one of %v; body: %s", status, p.want, body)
					}
					if strings.Contains(body, bravoSecret) {
						t.Errorf("answer leaks bravo's data: %s", body)
					}
					switch dashboard := rt.Pattern == "/{$}" || strings.HasPrefix(rt.Pattern, "/ui/") && rt.Pattern != "/ui/assets/{file}"; {
					case status >= 400 && dashboard && !strings.HasPrefix(body, "<!doctype html>"):
						t.Errorf("dashboard error answer is not an HTML page: %s", body)
					case status >= 400 && !dashboard && envelopeCode(body) == "":
						t.Errorf("error answer is not the JSON envelope: %s", body)
					}
					if p.check != nil && status < 300 {
						p.check(t, body)
					}
				})
			}
		}
		for key := range table {
			if !seen[key] {
				t.Errorf("isoProbe for %s matches no route of the server", key)
			}
		}
		f.assertBravoUnchanged(t)
	})
}

// isoGenericProbes derive from the route's authentication kind alone.
func isoGenericProbes(rt controlplane.Route) []isoProbe {
	unauth := []int{http.StatusUnauthorized}
	switch rt.Auth {
	case controlplane.AuthUser:
		return []isoProbe{
			{name: "no token", who: isoAnonymous, want: unauth},
			{name: "agent certificate is not a user credential", who: isoAgentA1, want: unauth},
			{name: "tenant header naming bravo", who: isoAlphaAsBravo, want: []int{http.StatusForbidden}},
		}
	case controlplane.AuthAdmin:
		return []isoProbe{
			{name: "no token", who: isoAnonymous, want: unauth},
			{name: "agent certificate", who: isoAgentA1, want: unauth},
			{name: "tenant token as bravo", who: isoAlphaAsBravo, want: []int{http.StatusForbidden}},
		}
	case controlplane.AuthAgent:
		return []isoProbe{
			{name: "no certificate", who: isoAnonymous, want: unauth},
			{name: "user token is not an agent credential", who: isoAlphaToken, want: unauth},
		}
	case controlplane.AuthSession:
		return []isoProbe{
			{name: "no session", who: isoAnonymous, want: unauth},
			{name: "bearer token is not a session", who: isoAlphaToken, want: unauth},
			{name: "agent certificate is not a session", who: isoAgentA1, want: unauth},
		}
	}
	return nil
}

func (f *isoFixture) assertBravoUnchanged(t *testing.T) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	st := f.env.Store()
	evs, err := st.ListAudit(ctx, "bravo", 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != f.bravoAuditSeqs {
		var got []string
		for _, e := range evs[f.bravoAuditSeqs:] {
			got = append(got, e.Actor+" "+e.Action+" "+e.Object)
		}
		t.Errorf("bravo's audit log grew during the probes: %v", got)
	}
	inv, err := st.Inventory(ctx, "bravo", "b1")
	if err != nil || inv.Version != 1 || len(inv.VMs) != 1 || inv.VMs[0].Name != bravoSecret+"-vm" {
		t.Errorf("b1 inventory changed: %+v, %v", inv, err)
	}
	p, err := st.GetPlan(ctx, "bravo", f.planB.ID)
	if err != nil || p.Status != model.PlanPending {
		t.Errorf("bravo's plan changed: %s, %v", p.Status, err)
	}
	pa2, err := st.GetPlan(ctx, "alpha", f.planA2.ID)
	if err != nil || pa2.Status != model.PlanPending {
		t.Errorf("a2's plan changed by a1: %s, %v", pa2.Status, err)
	}
	page, err := f.bravo.Client.Logs(ctx, f.planB.ID, 0)
	if err != nil || len(page.Lines) != 1 {
		t.Errorf("bravo's logs changed: %+v, %v", page, err)
	}
	if _, err := f.bravo.Client.GetRepo(ctx, f.repoB.ID); err != nil {
		t.Errorf("bravo's repo: %v", err)
	}
	if n, err := st.GetNetBirdIntegration(ctx, "bravo"); err != nil || n.URL != "https://git.example.net/"+bravoSecret+"-netbird" {
		t.Errorf("bravo's NetBird integration changed: %+v, %v", n, err)
	}
	if _, sec, err := st.CredentialSecret(ctx, "bravo", isoCredential); err != nil || sec.Reveal() != bravoSecret+"-token" {
		t.Errorf("bravo's credential changed: %v", err)
	}
	site, err := f.bravo.Client.GetSite(ctx, "b1")
	if err != nil || site.Revoked || site.NetBirdManagementURL != "https://"+bravoSecret+".example.net" {
		t.Errorf("bravo's site changed: %+v, %v", site, err)
	}
	if _, err := f.bravo.Client.GetImage(ctx, f.imageB.SHA256); err != nil {
		t.Errorf("bravo's image: %v", err)
	}
	// Bravo's enrollment token survived the misuse and still works.
	key, _ := pki.NewKey()
	csr, _ := pki.NewCSR(key, "b2")
	c, err := api.NewClient(api.ClientConfig{BaseURL: f.env.URL, RootCAs: f.env.CAPool})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enroll(ctx, api.EnrollRequest{Token: f.enrollB2.Token, CSR: string(csr)}); err != nil {
		t.Errorf("bravo's enrollment token was burned by the probes: %v", err)
	}
	c.CloseIdleConnections()
	if _, err := f.a1.Client.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Errorf("a1 still works after the probes: %v", err)
	}
}
