// Package fleetsim simulates a fleet of edge sites against a control plane
// and measures it: each site is a real agent stack (enrollment with a
// one-time token and a CSR, mTLS, the agent's loops, executor, action cache
// and outbox on disk) over an in-memory Hypervisor. The control plane is
// given (in-process or replicas on loopback; see ControlPlane); the
// simulator owns the tenant's git repository, a loopback forge that counts
// commit statuses, the scenario and its Report. `nkudo bench fleet` runs
// it; tests use it directly for correctness checks, never for timing.
package fleetsim

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// Bounds of a run: a simulation is a measurement on one machine, not a
// load generator to point anywhere.
const (
	MaxSites   = 20000
	MaxVMs     = 100
	MaxTimeout = 2 * time.Hour
)

// Tenant is the tenant the simulator creates and fills.
const Tenant = "fleetsim"

// ControlPlane is the control plane under test: one URL per replica, all
// on loopback, sharing one CA and one database.
type ControlPlane struct {
	// URLs are the replicas' base URLs (https://127.0.0.1:port).
	URLs []string
	// CAPool trusts the servers; CAFingerprint is the CA's "sha256:…" pin
	// the agents enroll with.
	CAPool        *x509.CertPool
	CAFingerprint string
	// AdminToken is an admin-scope API token.
	AdminToken string
	// Store reads the database the replicas share (plans for timings and
	// duplicates); nil leaves those figures out.
	Store store.Store
	// Usage reports the control plane's peak RSS and CPU time so far (nil:
	// not reported).
	Usage func() (Usage, error)
	// DBSize reports the database's size in bytes (nil: not reported).
	DBSize func(ctx context.Context) (int64, error)
	// Kill ends replica i abruptly (kill -9); nil when replicas cannot be killed.
	Kill func(i int) error
	// Restart stops the whole control plane at once (every replica) and
	// starts it again on the same addresses and database, returning once
	// it is ready; it calls down when every replica has stopped and none
	// has started yet, which is when the reconnect storm is timed from.
	// nil: it cannot be restarted (no reconnect storm).
	Restart func(ctx context.Context, down func()) error
	// RSS reports the control plane's current resident memory and what
	// was measured (nil: not reported).
	RSS func() (bytes int64, note string, err error)
}

// Usage is what the control plane has consumed.
type Usage struct {
	PeakRSSBytes int64   `json:"peakRssBytes"`
	CPUSeconds   float64 `json:"cpuSeconds"`
	// Note says what was measured (in-process figures include the simulated agents).
	Note string `json:"note,omitempty"`
}

// Options configure Run.
type Options struct {
	// Sites (1–MaxSites) and VMs per site (1–MaxVMs).
	Sites, VMs int
	// Timeout bounds the whole run (0: 10 minutes).
	Timeout time.Duration
	// WorkDir holds the repository and every agent's state.
	WorkDir      string
	ControlPlane ControlPlane
	// Latency is added to every hypervisor call; FailureRate (0–1) is the
	// share of hypervisor calls that fail.
	Latency     time.Duration
	FailureRate float64
	// Enrollers is how many sites enroll at once (0: 16).
	Enrollers int
	// PollWait is the agents' plan long-poll (0: the agent's default).
	PollWait time.Duration
	// KillReplicaAfter, when > 0, kills replica KillReplica
	// (ControlPlane.Kill) once that many sites have converged in the first
	// rollout. Webhooks go to replica 0 first, so replica 0 is the one that
	// reconciles (it takes the repository's lease); the others serve agents.
	KillReplicaAfter int
	KillReplica      int
	// SkipChanges ends the scenario after the first rollout.
	SkipChanges bool
	// NoChanges commits nothing: the sites enroll and connect, then the
	// reconnect storm runs when asked. It measures connection cost alone.
	NoChanges bool
	// ReconnectStorm adds a last phase: the whole control plane restarted
	// at once (ControlPlane.Restart), timed until every agent is back.
	// StormBound bounds it (0: DefaultStormBound, and never past Timeout):
	// an agent not back by then gave up.
	ReconnectStorm bool
	StormBound     time.Duration
	// Progress receives a line every ProgressEvery (nil: none; 0: 2s).
	Progress      io.Writer
	ProgressEvery time.Duration
	// Logger receives the agents' warnings (nil: discarded).
	Logger *slog.Logger
}

// CheckSize checks a run's size against the bounds.
func CheckSize(sites, vms int, timeout time.Duration) error {
	switch {
	case sites < 1 || sites > MaxSites:
		return fmt.Errorf("sites: %d: want 1 to %d", sites, MaxSites)
	case vms < 1 || vms > MaxVMs:
		return fmt.Errorf("vms: %d: want 1 to %d per site", vms, MaxVMs)
	case timeout < 0 || timeout > MaxTimeout:
		return fmt.Errorf("timeout: %s: want at most %s", timeout, MaxTimeout)
	}
	return nil
}

func (o *Options) check() error {
	if err := CheckSize(o.Sites, o.VMs, o.Timeout); err != nil {
		return err
	}
	switch {
	case o.FailureRate < 0 || o.FailureRate >= 1:
		return fmt.Errorf("failure rate: %g: want 0 to below 1", o.FailureRate)
	case o.Latency < 0:
		return fmt.Errorf("latency: %s: want a positive duration", o.Latency)
	case o.WorkDir == "":
		return errors.New("work dir: required")
	case len(o.ControlPlane.URLs) == 0:
		return errors.New("control plane: no URL")
	case o.ControlPlane.AdminToken == "" || o.ControlPlane.CAPool == nil || o.ControlPlane.CAFingerprint == "":
		return errors.New("control plane: admin token, CA pool and CA fingerprint are required")
	case o.KillReplicaAfter > 0 && (o.KillReplica < 0 || o.KillReplica >= len(o.ControlPlane.URLs)):
		return fmt.Errorf("kill replica: %d: want 0 to %d", o.KillReplica, len(o.ControlPlane.URLs)-1)
	case o.KillReplicaAfter > 0 && o.ControlPlane.Kill == nil:
		return errors.New("kill replica after: the control plane's replicas cannot be killed (start them with the simulator)")
	case o.KillReplicaAfter > 0 && o.NoChanges:
		return errors.New("kill replica after: the replica is killed in the rollout, and no changes means no rollout")
	case o.ReconnectStorm && o.ControlPlane.Restart == nil:
		return errors.New("reconnect storm: the control plane cannot be restarted (start it with the simulator)")
	case o.StormBound < 0:
		return fmt.Errorf("storm bound: %s: want a positive duration", o.StormBound)
	}
	for _, u := range o.ControlPlane.URLs {
		if err := CheckLoopback(u); err != nil {
			return err
		}
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Enrollers <= 0 {
		o.Enrollers = 16
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.StormBound == 0 {
		o.StormBound = DefaultStormBound
	}
	return nil
}

// CheckLoopback refuses a control-plane URL whose host is not a loopback
// address (or "localhost").
func CheckLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return fmt.Errorf("control plane URL %q: want https://<loopback address>:<port>", raw)
	}
	h := u.Hostname()
	if h == "localhost" {
		return nil
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("control plane URL %q: the simulator only talks to loopback addresses", raw)
}

// site is one simulated site.
type site struct {
	index  int // from 1, as in its name
	name   string
	hv     *Hypervisor
	client *api.Client
	vms    []vmSpec
	// heartbeats counts acknowledged heartbeats; hbErrors failed ones.
	heartbeats, hbErrors atomic.Int64
	// reconnected is when (unix ns) the first heartbeat sent after the
	// control plane went down in the storm was acknowledged; 0: not yet.
	reconnected atomic.Int64
}

// want is the site's desired inventory.
func (s *site) want() map[string]model.ObservedVM {
	out := make(map[string]model.ObservedVM, len(s.vms))
	for _, v := range s.vms {
		out[v.name] = model.ObservedVM{Name: v.name, State: model.VMRunning, Managed: true, CPUs: v.cpus, MemoryMiB: vmMemoryMiB}
	}
	return out
}

// countingClient is the agent's control-plane client, counting heartbeats
// and sorting every failed request by kind.
type countingClient struct {
	*api.Client
	s   *site
	sim *sim
}

func (c countingClient) Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	sent := time.Now().UnixNano()
	resp, err := c.Client.Heartbeat(ctx, req)
	switch {
	case err != nil:
		c.s.hbErrors.Add(1)
		c.failed(ctx, err)
	default:
		c.s.heartbeats.Add(1)
		// Sent after the control plane went down: the restarted one answered.
		if down := c.sim.downAt.Load(); down != 0 && sent >= down {
			c.s.reconnected.CompareAndSwap(0, time.Now().UnixNano())
		}
	}
	return resp, err
}

// failed counts a failed request by class; one the agent itself
// cancelled (it is stopping) is not a failure of the control plane.
func (c countingClient) failed(ctx context.Context, err error) {
	if err != nil && ctx.Err() == nil {
		c.sim.errs[classify(err)].Add(1)
	}
}

func (c countingClient) WatchPlan(ctx context.Context, after string, wait time.Duration) (*api.AgentPlan, error) {
	p, err := c.Client.WatchPlan(ctx, after, wait)
	c.failed(ctx, err)
	return p, err
}

func (c countingClient) ReportResults(ctx context.Context, results ...api.ActionResult) (api.ResultsResponse, error) {
	resp, err := c.Client.ReportResults(ctx, results...)
	c.failed(ctx, err)
	return resp, err
}

func (c countingClient) SendLogs(ctx context.Context, lines []api.LogLine) (api.LogsResponse, error) {
	resp, err := c.Client.SendLogs(ctx, lines)
	c.failed(ctx, err)
	return resp, err
}

type sim struct {
	o      Options
	admin  *api.Client // admin token, acting on Tenant
	hc     *http.Client
	sink   *statusSink
	repo   *repo
	repoID string
	secret string
	sites  []*site
	procs  string // fake /proc for the agents' facts

	converged atomic.Int64 // sites converged in the running phase
	phase     atomic.Value // string
	killed    atomic.Bool
	killedAt  atomic.Int64 // sites converged in the rollout when the replica was killed
	// downAt is when (unix ns) the control plane went down in the
	// reconnect storm; 0 before it.
	downAt atomic.Int64
	errs   [numErrClasses]atomic.Int64 // failed agent requests by class
}

// Run runs the scenario and reports it. It fails when the fleet does not
// converge within the timeout; the checks (duplicates, final statuses)
// are in the Report for the caller to judge.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	s := &sim{o: o, secret: "fleetsim-webhook-secret"}
	s.phase.Store("start")
	cp := o.ControlPlane
	var err error
	s.admin, err = api.NewClient(api.ClientConfig{BaseURL: cp.URLs[0], FailoverURLs: cp.URLs[1:], Token: cp.AdminToken, Tenant: Tenant, RootCAs: cp.CAPool, UserAgent: "nkudo-fleetsim"})
	if err != nil {
		return nil, err
	}
	defer s.admin.CloseIdleConnections()
	s.hc = s.admin.HTTPClient()
	if s.sink, err = startStatusSink(); err != nil {
		return nil, fmt.Errorf("status sink: %w", err)
	}
	defer s.sink.Close()
	if s.repo, err = initRepo(filepath.Join(o.WorkDir, "repo")); err != nil {
		return nil, err
	}
	if err := s.fakeProc(); err != nil {
		return nil, err
	}

	// The sites exist before anything reads them (the progress lines).
	s.sites = make([]*site, o.Sites)
	for i := range s.sites {
		s.sites[i] = &site{index: i + 1, name: SiteName(i + 1), hv: NewHypervisor(o.Latency, o.FailureRate)}
	}
	rep := &Report{Sites: o.Sites, VMs: o.VMs, Replicas: len(cp.URLs), Started: time.Now().UTC()}
	stopProgress := s.progress(ctx)
	defer stopProgress()
	// The control plane alone, started and idle: what each agent adds is
	// measured against this.
	before, note, err := s.rss()
	if err != nil {
		return nil, fmt.Errorf("control plane RSS: %w", err)
	}

	if err := s.bootstrap(ctx); err != nil {
		return nil, err
	}
	s.phase.Store("enroll")
	start := time.Now()
	if err := s.enroll(ctx); err != nil {
		return nil, err
	}
	rep.Enroll = Seconds(time.Since(start).Seconds())

	agentsCtx, stopAgents := context.WithCancel(context.WithoutCancel(ctx))
	var agents sync.WaitGroup
	defer func() { stopAgents(); agents.Wait() }()
	for _, st := range s.sites {
		if err := s.startAgent(agentsCtx, st, &agents); err != nil {
			return nil, err
		}
	}
	s.phase.Store("connect")
	if err := s.waitFor(ctx, "every agent's first heartbeat", func() (bool, string) {
		n := 0
		for _, st := range s.sites {
			if st.heartbeats.Load() > 0 {
				n++
			}
		}
		return n == len(s.sites), fmt.Sprintf("%d/%d agents heartbeated", n, len(s.sites))
	}); err != nil {
		return nil, err
	}
	if cp.RSS != nil {
		connected, _, err := s.rss()
		if err != nil {
			return nil, fmt.Errorf("control plane RSS: %w", err)
		}
		rep.RSS = &ConnectedRSS{BeforeBytes: before, ConnectedBytes: connected, PerAgentBytes: (connected - before) / int64(len(s.sites)), Note: note}
	}
	hbStart, hbCount := time.Now(), s.heartbeats()
	if !o.NoChanges {
		err = s.phases(ctx, rep)
	}
	// Heartbeats are counted up to the storm, which stops them on purpose;
	// under a second says nothing.
	if d := time.Since(hbStart); d >= time.Second {
		rep.HeartbeatsPerSecond = float64(s.heartbeats()-hbCount) / d.Seconds()
	}
	if err == nil && o.ReconnectStorm {
		rep.Storm, err = s.storm(ctx)
		if err == nil && rep.RSS != nil {
			if rep.RSS.AfterStormBytes, _, err = s.rss(); err != nil {
				err = fmt.Errorf("control plane RSS: %w", err)
			}
		}
	}
	// The figures so far are reported even when a phase failed: they say
	// where the fleet stopped. Summing up gets its own short deadline, as
	// the run's may be what ended.
	sctx, cancelSum := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancelSum()
	return rep, errors.Join(err, s.summarize(sctx, rep))
}

// phases runs the scenario's commits, appending each phase to rep.
func (s *sim) phases(ctx context.Context, rep *Report) error {
	o := s.o
	// Rollout: every site gets VMs vm-01…
	for _, st := range s.sites {
		for v := 1; v <= o.VMs; v++ {
			st.vms = append(st.vms, vmSpec{name: fmt.Sprintf("vm-%02d", v), cpus: 1})
		}
	}
	run := func(name string, changed []*site) error {
		ph, err := s.runPhase(ctx, name, changed)
		if ph != nil {
			rep.Phases = append(rep.Phases, *ph)
		}
		return err
	}
	if err := run("rollout", s.sites); err != nil || o.SkipChanges {
		return err
	}
	// One site gets one more VM.
	one := s.sites[0]
	one.vms = append(one.vms, vmSpec{name: fmt.Sprintf("vm-%02d", o.VMs+1), cpus: 1})
	if err := run("one-site", s.sites[:1]); err != nil {
		return err
	}
	// 1 % of the sites (at least one) resize their first VM.
	n := max(1, len(s.sites)/100)
	step := len(s.sites) / n
	var changed []*site
	for i := 0; i < n; i++ {
		st := s.sites[i*step]
		st.vms[0].cpus = 2
		changed = append(changed, st)
	}
	return run("one-percent", changed)
}

// summarize fills in the run's totals and checks.
func (s *sim) summarize(ctx context.Context, rep *Report) error {
	cp := s.o.ControlPlane
	for _, st := range s.sites {
		rep.HeartbeatErrors += st.hbErrors.Load()
		calls, failed := st.hv.Calls()
		rep.HypervisorCalls += calls
		rep.HypervisorFailures += failed
		for _, d := range st.hv.Duplicates() {
			rep.DuplicateCalls = append(rep.DuplicateCalls, st.name+": "+d)
		}
	}
	rep.StatusesWritten = s.sink.total()
	rep.ReplicaKilled = s.killed.Load()
	rep.KilledAtConverged = int(s.killedAt.Load())
	rep.KilledReplica = s.o.KillReplica
	rep.Elapsed = Seconds(time.Since(rep.Started).Seconds())
	var errs []error
	if cp.Store != nil {
		errs = append(errs, s.planChecks(ctx, rep))
	}
	if cp.Usage != nil {
		u, err := cp.Usage()
		if err != nil {
			errs = append(errs, fmt.Errorf("control plane usage: %w", err))
		} else {
			rep.ControlPlane = &u
		}
	}
	if cp.DBSize != nil {
		n, err := cp.DBSize(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("database size: %w", err))
		}
		rep.DatabaseBytes = n
	}
	return errors.Join(errs...)
}

func (s *sim) heartbeats() int64 {
	var n int64
	for _, st := range s.sites {
		n += st.heartbeats.Load()
	}
	return n
}

// fakeProc writes the few /proc files host facts read, once for every
// agent: the simulated sites report the same small host, and the machine's
// real /proc is not read ten thousand times a heartbeat interval.
func (s *sim) fakeProc() error {
	s.procs = filepath.Join(s.o.WorkDir, "proc")
	files := map[string]string{
		"sys/kernel/osrelease": "6.1.0-fleetsim\n",
		"cpuinfo":              "processor\t: 0\nmodel name\t: fleetsim vCPU\n\nprocessor\t: 1\nmodel name\t: fleetsim vCPU\n",
		"meminfo":              "MemTotal:        8000000 kB\n",
		"stat":                 "btime 1700000000\n",
	}
	for name, body := range files {
		p := filepath.Join(s.procs, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// bootstrap creates the tenant and its repository, its forge the sink.
func (s *sim) bootstrap(ctx context.Context) error {
	if _, err := s.admin.CreateTenant(ctx, api.CreateTenantRequest{ID: Tenant}); err != nil && !errors.Is(err, api.ErrConflict) {
		return fmt.Errorf("create tenant: %w", err)
	}
	r, err := s.admin.CreateRepo(ctx, api.CreateRepoRequest{
		Name: "fleet", URL: "file://" + s.repo.dir, Branch: "main", Path: "manifests", WebhookSecret: s.secret,
		ForgeKind: string(store.ForgeGitea), ForgeAPIURL: s.sink.URL(), ForgeProject: Tenant + "/fleet",
	})
	if err != nil {
		return fmt.Errorf("register repository: %w", err)
	}
	s.repoID = r.ID
	return nil
}

// SiteName is the name of site i (from 1).
func SiteName(i int) string { return fmt.Sprintf("site-%05d", i) }

// enroll creates every site and enrolls its agent with a one-time token.
func (s *sim) enroll(ctx context.Context) error {
	var next atomic.Int64
	var done atomic.Int64
	errs := make(chan error, s.o.Enrollers)
	var wg sync.WaitGroup
	for range s.o.Enrollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(s.sites) || ctx.Err() != nil {
					return
				}
				if err := s.enrollOne(ctx, s.sites[i]); err != nil {
					errs <- err
					return
				}
				done.Add(1)
				s.converged.Store(done.Load())
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

func (s *sim) enrollOne(ctx context.Context, st *site) error {
	if _, err := s.admin.CreateSite(ctx, st.name); err != nil && !errors.Is(err, api.ErrConflict) {
		return fmt.Errorf("create site %s: %w", st.name, err)
	}
	tok, err := s.admin.CreateEnrollmentToken(ctx, st.name, time.Hour)
	if err != nil {
		return fmt.Errorf("enrollment token of %s: %w", st.name, err)
	}
	if tok.CAFingerprint != "" && !strings.EqualFold(tok.CAFingerprint, s.o.ControlPlane.CAFingerprint) {
		return fmt.Errorf("enrollment token of %s: CA %s, want %s", st.name, tok.CAFingerprint, s.o.ControlPlane.CAFingerprint)
	}
	url := s.siteURLs(st)[0]
	if _, err := agent.Enroll(ctx, agent.EnrollOptions{ControlPlane: url, Token: tok.Token, CAHash: s.o.ControlPlane.CAFingerprint,
		PKIDir: filepath.Join(s.o.WorkDir, "sites", st.name, "pki"), Hostname: st.name}, nil); err != nil {
		return fmt.Errorf("enroll %s: %w", st.name, err)
	}
	return nil
}

// siteURLs are the control-plane URLs of a site's agent: its own replica
// (sites are spread over the replicas in turn) first.
func (s *sim) siteURLs(st *site) []string {
	urls := s.o.ControlPlane.URLs
	k := st.index % len(urls)
	return append(slices.Clone(urls[k:]), urls[:k]...)
}

// startAgent runs the site's agent: the real loops, executor and cache.
func (s *sim) startAgent(ctx context.Context, st *site, wg *sync.WaitGroup) error {
	dir := filepath.Join(s.o.WorkDir, "sites", st.name)
	id, err := agent.LoadIdentity(filepath.Join(dir, "pki"))
	if err != nil {
		return err
	}
	client, err := s.agentClient(st, id)
	if err != nil {
		return err
	}
	st.client = client
	log := s.o.Logger.With("site", st.name)
	ex, err := agent.NewExecutor(filepath.Join(dir, "agent"), st.hv, log)
	if err != nil {
		return fmt.Errorf("executor of %s: %w", st.name, err)
	}
	a := agent.New(agent.Config{
		Client: countingClient{Client: client, s: st, sim: s}, Executor: ex, Logger: log, AgentVersion: "fleetsim",
		Facts:         agent.FactsSource{StateDir: dir, Hypervisor: st.hv, ProcDir: s.procs, KVMPath: filepath.Join(dir, "no-kvm"), AgentVersion: "fleetsim"},
		SiteRecipient: id.SiteRecipient(),
		PollWait:      s.o.PollWait,
		// The first heartbeats of a large fleet spread over a few seconds.
		FirstHeartbeat: 5 * time.Second,
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer client.CloseIdleConnections()
		if err := a.Run(ctx); err != nil {
			log.Warn("agent stopped", "err", err)
		}
	}()
	return nil
}

// agentClient is the site's mTLS client of its control plane: its own
// replica, failing over to the others in turn, as `nkudo-edge run` does
// with --control-plane repeated.
func (s *sim) agentClient(st *site, id *agent.Identity) (*api.Client, error) {
	urls := s.siteURLs(st)
	return api.NewClient(api.ClientConfig{BaseURL: urls[0], FailoverURLs: urls[1:], RootCAs: id.RootCAs(), Certificate: id.Certificate,
		UserAgent: "nkudo-edge/fleetsim"})
}

// webhook delivers a signed Gitea push of main from before to after, to
// each replica in turn until one accepts it.
func (s *sim) webhook(ctx context.Context, before, after string) error {
	body := fmt.Sprintf(`{"ref":"refs/heads/main","before":%q,"after":%q,"repository":{"default_branch":"main","full_name":%q}}`,
		before, after, Tenant+"/fleet")
	mac := hmac.New(sha256.New, []byte(s.secret))
	mac.Write([]byte(body))
	sig := hex.EncodeToString(mac.Sum(nil))
	var errs []error
	for i, base := range s.o.ControlPlane.URLs {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+api.Path(api.PathWebhook, s.repoID), strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Gitea-Event", "push")
		req.Header.Set("X-Gitea-Delivery", fmt.Sprintf("fleetsim-%s-%d", after[:12], i))
		req.Header.Set("X-Gitea-Signature", sig)
		resp, err := s.hc.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: HTTP %d %s", base, resp.StatusCode, strings.TrimSpace(string(b))))
	}
	return fmt.Errorf("deliver push webhook for %s: %w", after, errors.Join(errs...))
}

// waitFor polls cond until it holds or ctx ends.
func (s *sim) waitFor(ctx context.Context, what string, cond func() (bool, string)) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		ok, state := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s (%s): %w", what, state, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// progress prints a line per ProgressEvery until the returned func is called.
func (s *sim) progress(ctx context.Context) func() {
	if s.o.Progress == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(s.o.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			var hbErrors int64
			for _, st := range s.sites {
				hbErrors += st.hbErrors.Load()
			}
			fmt.Fprintf(s.o.Progress, "fleetsim %6.1fs %-12s sites done %d/%d, heartbeats %d (%d failed), statuses %d\n",
				time.Since(start).Seconds(), s.phase.Load(), s.converged.Load(), s.o.Sites, s.heartbeats(), hbErrors, s.sink.total())
		}
	}()
	return func() { cancel(); <-done }
}
