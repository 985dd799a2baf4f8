package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// ClientConfig configures a Client. BaseURL is required; the rest selects
// the authentication mode: Token for people and the CLI, Certificate for an
// enrolled agent, neither for enrollment and the public endpoints.
type ClientConfig struct {
	// BaseURL is the control plane, for example "https://cp.example.net:8443".
	BaseURL string
	// FailoverURLs are more replicas of the same control plane (nil = none).
	// A request that meets a connection error or a 500, 502, 503 or 504 is
	// sent again to the next URL in turn (BaseURL first), and the client
	// stays on the URL that answered. Only the JSON calls fail over; the
	// streaming ones (FollowLogs, PushImage, CRL) use the current URL.
	FailoverURLs []string
	// Token is a bearer API token ("" = none).
	Token string
	// Tenant is sent in the Nkudo-Tenant header, for admin tokens acting on a tenant.
	Tenant string
	// RootCAs verifies the server. nil with CAFingerprint set: the server's
	// chain must contain a CA with that fingerprint (enrollment, before the
	// agent has the CA). nil without CAFingerprint: the system roots.
	RootCAs *x509.CertPool
	// CAFingerprint pins the control plane's CA ("sha256:<hex>").
	CAFingerprint string
	// Certificate returns the mTLS client certificate; called at every TLS
	// handshake, so an agent can swap in a renewed certificate (then call
	// CloseIdleConnections). nil = no client certificate.
	Certificate func() (*tls.Certificate, error)
	// HTTPClient replaces the default client (its transport then decides TLS).
	HTTPClient *http.Client
	// UserAgent is sent with every request ("" = "nkudo-api-client").
	UserAgent string
	// IdlePing is how long a connection may be silent before the client
	// pings it; one that does not answer within a third of that is
	// dropped, ending the requests on it (a long-poll parked on a replica
	// whose host vanished). 0 = 30s. Ignored with HTTPClient.
	IdlePing time.Duration
}

// Client is a typed client of the control plane API. Errors from the server
// are *Error values; test them with errors.Is against the Err* sentinels.
type Client struct {
	base   *url.URL
	hc     *http.Client
	cfg    ClientConfig
	closer interface{ CloseIdleConnections() }
	// bases are BaseURL and the FailoverURLs; current indexes the one in use.
	bases   []*url.URL
	current atomic.Int32
}

// NewClient returns a Client for cfg.
func NewClient(cfg ClientConfig) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("control plane URL %q: want scheme://host[:port]", cfg.BaseURL)
	}
	c := &Client{base: u, cfg: cfg, bases: []*url.URL{u}}
	for _, f := range cfg.FailoverURLs {
		fu, err := url.Parse(strings.TrimRight(f, "/"))
		if err != nil || fu.Scheme == "" || fu.Host == "" {
			return nil, fmt.Errorf("failover control plane URL %q: want scheme://host[:port]", f)
		}
		c.bases = append(c.bases, fu)
	}
	if cfg.HTTPClient != nil {
		c.hc = cfg.HTTPClient
		c.closer = cfg.HTTPClient
		return c, nil
	}
	tc, err := clientTLS(cfg)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.ForceAttemptHTTP2 = true
	// A replica whose host vanished sends no reset: dial it for at most
	// 10s, and ping a connection that has been silent (IdlePing), so a
	// long-poll parked on it ends and the next request fails over.
	ping := cfg.IdlePing
	if ping <= 0 {
		ping = 30 * time.Second
	}
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.HTTP2 = &http.HTTP2Config{SendPingTimeout: ping, PingTimeout: ping / 3}
	c.hc = &http.Client{Transport: tr}
	c.closer = tr
	return c, nil
}

func clientTLS(cfg ClientConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs}
	if cfg.Certificate != nil {
		get := cfg.Certificate
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return get() }
	}
	if cfg.RootCAs == nil && cfg.CAFingerprint != "" {
		pin := strings.ToLower(cfg.CAFingerprint)
		if !strings.HasPrefix(pin, "sha256:") || len(pin) != len("sha256:")+64 {
			return nil, fmt.Errorf("CA fingerprint %q: want sha256:<64 hex digits>", cfg.CAFingerprint)
		}
		// Verify the chain ourselves against the pinned CA the server sends.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPinned(cs, pin) }
	}
	return tc, nil
}

// verifyPinned accepts a server whose presented chain contains a CA with
// the pinned fingerprint and whose leaf verifies under that CA for the host.
func verifyPinned(cs tls.ConnectionState, pin string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server presented no certificate")
	}
	pool := x509.NewCertPool()
	found := false
	for _, c := range cs.PeerCertificates {
		if fingerprint(c.Raw) == pin {
			pool.AddCert(c)
			found = true
		}
	}
	if !found {
		return fmt.Errorf("server's CA does not match the pinned fingerprint %s", pin)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: cs.ServerName, Roots: pool, Intermediates: inter})
	if err != nil {
		return fmt.Errorf("server certificate does not verify under the pinned CA: %w", err)
	}
	return nil
}

// CloseIdleConnections drops pooled connections, so the next request
// handshakes again (with a renewed client certificate).
func (c *Client) CloseIdleConnections() {
	if c.closer != nil {
		c.closer.CloseIdleConnections()
	}
}

// BaseURL is the control plane URL the client talks to.
func (c *Client) BaseURL() string { return c.base.String() }

// CurrentURL is the control plane URL the next request goes to: BaseURL
// until a failover moved to one of the FailoverURLs.
func (c *Client) CurrentURL() string { return c.bases[c.current.Load()].String() }

func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, in any) (*http.Request, error) {
	return c.newRequestTo(ctx, c.bases[c.current.Load()], method, path, query, in)
}

func (c *Client) newRequestTo(ctx context.Context, base *url.URL, method, path string, query url.Values, in any) (*http.Request, error) {
	u := *base
	u.Path = base.Path + path
	u.RawPath = ""
	if p, err := url.PathUnescape(u.Path); err == nil && p != u.Path {
		u.RawPath = u.Path
		u.Path = p
	}
	u.RawQuery = query.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("build %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	ua := c.cfg.UserAgent
	if ua == "" {
		ua = "nkudo-api-client"
	}
	req.Header.Set("User-Agent", ua)
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	if c.cfg.Tenant != "" {
		req.Header.Set(TenantHeader, c.cfg.Tenant)
	}
	return req, nil
}

// do sends a request and decodes a 2xx JSON answer into out (when non-nil).
// It returns the status code; 204 leaves out untouched.
// With FailoverURLs, a connection error or a 5xx that another replica may
// not share sends the request to the next URL, each URL at most once per call.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) (int, error) {
	var resp *http.Response
	for attempt := 1; ; attempt++ {
		i := c.current.Load()
		req, err := c.newRequestTo(ctx, c.bases[i], method, path, query, in)
		if err != nil {
			return 0, err
		}
		resp, err = c.hc.Do(req)
		last := attempt >= len(c.bases) || ctx.Err() != nil
		if err != nil {
			if !last {
				c.failover(i)
				continue
			}
			return 0, fmt.Errorf("%s %s: %w", method, path, err)
		}
		if !last && failoverStatus(resp.StatusCode) {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			c.failover(i)
			continue
		}
		break
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return resp.StatusCode, decodeError(resp)
	}
	if resp.StatusCode == http.StatusNoContent || out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return resp.StatusCode, nil
}

// failover moves the client from URL i to the next one, unless another
// request already moved it.
func (c *Client) failover(i int32) {
	c.current.CompareAndSwap(i, (i+1)%int32(len(c.bases)))
}

// failoverStatus says whether an answer with this status is worth asking
// another replica: the replica failed or is overloaded, not the request.
func failoverStatus(code int) bool {
	switch code {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// call is do for the many endpoints that answer one JSON value: it returns
// that value decoded as T (the zero T on error).
func call[T any](ctx context.Context, c *Client, method, path string, query url.Values, in any) (T, error) {
	var out T
	_, err := c.do(ctx, method, path, query, in, &out)
	return out, err
}

// decodeError turns an error response into *Error; a body that is not the
// envelope (a proxy's HTML page) still yields the status.
func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body ErrorBody
	if err := json.Unmarshal(b, &body); err != nil || body.Error.Code == "" {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return &Error{Status: resp.StatusCode, Message: msg, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	}
	return &Error{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message,
		RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
}

// maxRetryAfter caps what a Retry-After header can ask for: a broken or
// hostile proxy must not park an agent for days.
const maxRetryAfter = 10 * time.Minute

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date
// (0 when absent, unparsable or in the past).
func retryAfter(h string) time.Duration {
	if h == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(h)); err == nil {
		return min(max(time.Duration(n)*time.Second, 0), maxRetryAfter)
	}
	if t, err := http.ParseTime(h); err == nil {
		return min(max(time.Until(t), 0), maxRetryAfter)
	}
	return 0
}

// ---- Operational ----

// Health calls /healthz (or /readyz when ready is true).
func (c *Client) Health(ctx context.Context, ready bool) error {
	p := PathHealthz
	if ready {
		p = PathReadyz
	}
	_, err := c.do(ctx, http.MethodGet, p, nil, nil, nil)
	return err
}

// CRL fetches the certificate revocation list in DER.
func (c *Client) CRL(ctx context.Context) ([]byte, error) {
	req, err := c.newRequest(ctx, http.MethodGet, PathCRL, nil, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get CRL: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, decodeError(resp)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read CRL: %w", err)
	}
	return b, nil
}

// ---- Agent ----

// Enroll redeems an enrollment token (no client certificate needed).
func (c *Client) Enroll(ctx context.Context, req EnrollRequest) (CertResponse, error) {
	if req.ProtocolVersion == 0 {
		req.ProtocolVersion = ProtocolVersion
	}
	return call[CertResponse](ctx, c, http.MethodPost, PathEnroll, nil, req)
}

// Renew asks for a fresh certificate for the current identity.
func (c *Client) Renew(ctx context.Context, req RenewRequest) (CertResponse, error) {
	if req.ProtocolVersion == 0 {
		req.ProtocolVersion = ProtocolVersion
	}
	return call[CertResponse](ctx, c, http.MethodPost, PathAgentRenew, nil, req)
}

// Heartbeat reports facts and inventory.
func (c *Client) Heartbeat(ctx context.Context, req HeartbeatRequest) (HeartbeatResponse, error) {
	if req.ProtocolVersion == 0 {
		req.ProtocolVersion = ProtocolVersion
	}
	return call[HeartbeatResponse](ctx, c, http.MethodPost, PathAgentHB, nil, req)
}

// WaitPlan long-polls for the site's active plan when it differs from
// after (the ID of the plan the agent already has, "" for none). The server
// holds the request up to wait (0 = answer at once; the server caps it at
// its maximum, 5m by default). It returns (nil, nil) when wait elapses
// without a newer plan.
func (c *Client) WaitPlan(ctx context.Context, after string, wait time.Duration) (*AgentPlan, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	return c.pollPlan(ctx, q, wait)
}

// WatchPlan is WaitPlan that also answers as soon as plan after is
// superseded while no newer plan is active (cancelled by a commit that needs
// nothing of it): the answer is then plan after itself with Status
// superseded and SupersededByCommit set. An agent asks it about a plan it
// has not yet heard ended; once told, it polls with after "" (WatchPlan
// would answer the same at once again). A control plane older than this
// call ignores the extra parameter and answers as WaitPlan.
func (c *Client) WatchPlan(ctx context.Context, after string, wait time.Duration) (*AgentPlan, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
		q.Set(QuerySuperseded, "1")
	}
	return c.pollPlan(ctx, q, wait)
}

// pollPlan is the long-poll both WaitPlan and WatchPlan send; 204 (wait
// elapsed) is (nil, nil).
func (c *Client) pollPlan(ctx context.Context, q url.Values, wait time.Duration) (*AgentPlan, error) {
	q.Set("wait", max(wait, 0).String())
	var out AgentPlan
	status, err := c.do(ctx, http.MethodGet, PathAgentPlan, q, nil, &out)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNoContent {
		return nil, nil
	}
	return &out, nil
}

// QuerySuperseded is the plan long-poll's query parameter asking for an
// answer when plan after is superseded (see Client.WatchPlan).
const QuerySuperseded = "superseded"

// ReportResults sends action outcomes (idempotent).
func (c *Client) ReportResults(ctx context.Context, results ...ActionResult) (ResultsResponse, error) {
	return call[ResultsResponse](ctx, c, http.MethodPost, PathAgentResults, nil, ResultsRequest{Results: results})
}

// SendLogs sends an ordered batch of log lines.
func (c *Client) SendLogs(ctx context.Context, lines []LogLine) (LogsResponse, error) {
	return call[LogsResponse](ctx, c, http.MethodPost, PathAgentLogs, nil, LogsRequest{Lines: lines})
}

// ---- Tenants and tokens (admin) ----

// CreateTenant creates a tenant (admin).
func (c *Client) CreateTenant(ctx context.Context, req CreateTenantRequest) (Tenant, error) {
	return call[Tenant](ctx, c, http.MethodPost, PathTenants, nil, req)
}

// ListTenants lists tenants (admin).
func (c *Client) ListTenants(ctx context.Context) ([]Tenant, error) {
	return call[[]Tenant](ctx, c, http.MethodGet, PathTenants, nil, nil)
}

// GetTenant returns one tenant (admin, or the tenant's own token).
func (c *Client) GetTenant(ctx context.Context, id string) (Tenant, error) {
	return call[Tenant](ctx, c, http.MethodGet, Path(PathTenant, id), nil, nil)
}

// CreateToken creates an API token (admin). The token is in the response only.
func (c *Client) CreateToken(ctx context.Context, req CreateTokenRequest) (CreateTokenResponse, error) {
	return call[CreateTokenResponse](ctx, c, http.MethodPost, PathTokens, nil, req)
}

// ListTokens lists the caller's tenant's tokens (or admin tokens for an admin without a tenant).
func (c *Client) ListTokens(ctx context.Context) ([]APIToken, error) {
	return call[[]APIToken](ctx, c, http.MethodGet, PathTokens, nil, nil)
}

// DeleteToken revokes an API token.
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, Path(PathToken, id), nil, nil, nil)
	return err
}

// ---- Repositories ----

// CreateRepo registers a repository.
func (c *Client) CreateRepo(ctx context.Context, req CreateRepoRequest) (Repository, error) {
	return call[Repository](ctx, c, http.MethodPost, PathRepos, nil, req)
}

// ListRepos lists the tenant's repositories.
func (c *Client) ListRepos(ctx context.Context) ([]Repository, error) {
	return call[[]Repository](ctx, c, http.MethodGet, PathRepos, nil, nil)
}

// GetRepo returns one repository.
func (c *Client) GetRepo(ctx context.Context, id string) (Repository, error) {
	return call[Repository](ctx, c, http.MethodGet, Path(PathRepo, id), nil, nil)
}

// UpdateRepo changes repository settings.
func (c *Client) UpdateRepo(ctx context.Context, id string, req UpdateRepoRequest) (Repository, error) {
	return call[Repository](ctx, c, http.MethodPatch, Path(PathRepo, id), nil, req)
}

// DeleteRepo removes a repository.
func (c *Client) DeleteRepo(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, Path(PathRepo, id), nil, nil, nil)
	return err
}

// PutCredential creates or replaces the tenant's credential name.
func (c *Client) PutCredential(ctx context.Context, name string, req PutCredentialRequest) (Credential, error) {
	return call[Credential](ctx, c, http.MethodPut, Path(PathCredential, name), nil, req)
}

// ListCredentials lists the tenant's credentials (never their secrets).
func (c *Client) ListCredentials(ctx context.Context) ([]Credential, error) {
	return call[[]Credential](ctx, c, http.MethodGet, PathCredentials, nil, nil)
}

// DeleteCredential removes the tenant's credential name.
func (c *Client) DeleteCredential(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodDelete, Path(PathCredential, name), nil, nil, nil)
	return err
}

// SetNetBirdIntegration sets the tenant's NetBird management API; the
// server checks the token against it first.
func (c *Client) SetNetBirdIntegration(ctx context.Context, req SetNetBirdIntegrationRequest) (NetBirdIntegration, error) {
	return call[NetBirdIntegration](ctx, c, http.MethodPut, PathNetBird, nil, req)
}

// GetNetBirdIntegration shows the tenant's NetBird management API.
func (c *Client) GetNetBirdIntegration(ctx context.Context) (NetBirdIntegration, error) {
	return call[NetBirdIntegration](ctx, c, http.MethodGet, PathNetBird, nil, nil)
}

// DeleteNetBirdIntegration removes it (the token credential stays).
func (c *Client) DeleteNetBirdIntegration(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodDelete, PathNetBird, nil, nil, nil)
	return err
}

// Reconcile triggers a reconcile of the repository.
func (c *Client) Reconcile(ctx context.Context, id, ref string) (TriggerResult, error) {
	return call[TriggerResult](ctx, c, http.MethodPost, Path(PathRepoReconcile, id), nil, ReconcileRequest{Ref: ref})
}

// CommitStatuses returns the statuses of one commit.
func (c *Client) CommitStatuses(ctx context.Context, repoID, commit string) ([]CommitStatus, error) {
	return call[[]CommitStatus](ctx, c, http.MethodGet, Path(PathRepoStatuses, repoID, commit), nil, nil)
}

// ListPreviews returns the repository's pull-request previews, newest first.
func (c *Client) ListPreviews(ctx context.Context, repoID string) ([]Preview, error) {
	return call[[]Preview](ctx, c, http.MethodGet, Path(PathRepoPreviews, repoID), nil, nil)
}

// GetPreview returns the newest preview of a pull request.
func (c *Client) GetPreview(ctx context.Context, repoID string, pr int) (Preview, error) {
	return call[Preview](ctx, c, http.MethodGet, Path(PathRepoPreview, repoID, strconv.Itoa(pr)), nil, nil)
}

// ---- Sites ----

// CreateSite registers a site.
func (c *Client) CreateSite(ctx context.Context, name string) (Site, error) {
	return call[Site](ctx, c, http.MethodPost, PathSites, nil, CreateSiteRequest{Name: name})
}

// ListSites lists the tenant's sites.
func (c *Client) ListSites(ctx context.Context) ([]Site, error) {
	return call[[]Site](ctx, c, http.MethodGet, PathSites, nil, nil)
}

// GetSite returns one site with its facts and heartbeat age.
func (c *Client) GetSite(ctx context.Context, name string) (Site, error) {
	return call[Site](ctx, c, http.MethodGet, Path(PathSite, name), nil, nil)
}

// DeleteSite removes a site.
func (c *Client) DeleteSite(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodDelete, Path(PathSite, name), nil, nil, nil)
	return err
}

// SetNetBird sets the site's NetBird management URL and setup key.
func (c *Client) SetNetBird(ctx context.Context, site string, req SetNetBirdRequest) error {
	_, err := c.do(ctx, http.MethodPut, Path(PathSiteNetBird, site), nil, req, nil)
	return err
}

// RevokeSite revokes the site's current agent certificate.
func (c *Client) RevokeSite(ctx context.Context, site string) (RevokeResponse, error) {
	return call[RevokeResponse](ctx, c, http.MethodPost, Path(PathSiteRevoke, site), nil, struct{}{})
}

// CreateEnrollmentToken creates a one-time enrollment token for a site.
func (c *Client) CreateEnrollmentToken(ctx context.Context, site string, ttl time.Duration) (EnrollmentToken, error) {
	return call[EnrollmentToken](ctx, c, http.MethodPost, Path(PathSiteEnroll, site), nil, CreateEnrollmentTokenRequest{TTL: Duration(ttl)})
}

// SiteVMs compares desired and actual VMs of a site.
func (c *Client) SiteVMs(ctx context.Context, site string) (SiteVMs, error) {
	return call[SiteVMs](ctx, c, http.MethodGet, Path(PathSiteVMs, site), nil, nil)
}

// ---- Plans, logs, audit ----

// PlanFilter selects plans in ListPlans; zero fields match everything.
type PlanFilter struct {
	Site, Commit, RepoID, Status string
	Limit                        int
}

// ListPlans lists the tenant's plans, newest first.
func (c *Client) ListPlans(ctx context.Context, f PlanFilter) ([]Plan, error) {
	q := url.Values{}
	for k, v := range map[string]string{"site": f.Site, "commit": f.Commit, "repo": f.RepoID, "status": f.Status} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return call[[]Plan](ctx, c, http.MethodGet, PathPlans, q, nil)
}

// GetPlan returns a plan with its actions.
func (c *Client) GetPlan(ctx context.Context, id string) (Plan, error) {
	return call[Plan](ctx, c, http.MethodGet, Path(PathPlan, id), nil, nil)
}

// Logs returns a plan's log lines with Seq > after.
func (c *Client) Logs(ctx context.Context, planID string, after int64) (LogPage, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	return call[LogPage](ctx, c, http.MethodGet, Path(PathPlanLogs, planID), q, nil)
}

// FollowLogs streams a plan's log lines with Seq > after, calling fn for
// each, until ctx ends, fn returns an error, or the server ends the stream
// (the plan finished and every line was sent). The returned error is nil in
// the last case.
func (c *Client) FollowLogs(ctx context.Context, planID string, after int64, fn func(LogLine) error) error {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}, "follow": {"true"}}
	req, err := c.newRequest(ctx, http.MethodGet, Path(PathPlanLogs, planID), q, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("follow logs: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue // keep-alive
		}
		var l LogLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("follow logs: decode line: %w", err)
		}
		if err := fn(l); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("follow logs: %w", err)
	}
	return nil
}

// ListAudit returns audit events with Seq > after, oldest first.
func (c *Client) ListAudit(ctx context.Context, after int64, limit int) ([]AuditEvent, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return call[[]AuditEvent](ctx, c, http.MethodGet, PathAudit, q, nil)
}

// fingerprint is "sha256:<hex of DER>", the form pki.Fingerprint prints.
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// VerifyAudit asks the server to recompute the whole audit hash chain (admin).
func (c *Client) VerifyAudit(ctx context.Context) (AuditVerification, error) {
	return call[AuditVerification](ctx, c, http.MethodGet, PathAuditVerify, nil, nil)
}

// HTTPClient is the client's HTTP client, with its TLS settings (the
// agent's mTLS certificate): for downloads from the control plane that are
// not JSON calls, such as images.
func (c *Client) HTTPClient() *http.Client { return c.hc }

// PushImage streams size bytes of body to the tenant's image store under
// name. sum, when not empty, is the digest the caller computed: the server
// refuses the push if the bytes do not match it.
func (c *Client) PushImage(ctx context.Context, name, sum string, size int64, body io.Reader) (PushImageResponse, error) {
	q := url.Values{}
	if name != "" {
		q.Set("name", name)
	}
	if sum != "" {
		q.Set("sha256", sum)
	}
	req, err := c.newRequest(ctx, http.MethodPost, PathImages, q, nil)
	if err != nil {
		return PushImageResponse{}, err
	}
	req.Body = io.NopCloser(body)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		return PushImageResponse{}, fmt.Errorf("POST %s: %w", PathImages, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return PushImageResponse{}, decodeError(resp)
	}
	var out PushImageResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return out, fmt.Errorf("POST %s: decode response: %w", PathImages, err)
	}
	return out, nil
}

// ListImages lists the tenant's images.
func (c *Client) ListImages(ctx context.Context) ([]Image, error) {
	return call[[]Image](ctx, c, http.MethodGet, PathImages, nil, nil)
}

// GetImage returns the tenant's image with digest sum.
func (c *Client) GetImage(ctx context.Context, sum string) (Image, error) {
	return call[Image](ctx, c, http.MethodGet, Path(PathImage, sum), nil, nil)
}

// DeleteImage removes the tenant's image with digest sum.
func (c *Client) DeleteImage(ctx context.Context, sum string) error {
	_, err := c.do(ctx, http.MethodDelete, Path(PathImage, sum), nil, nil, nil)
	return err
}
