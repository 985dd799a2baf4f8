package integration

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/forge/forgetest"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/localsource"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

const webhookSecret = "gitops-hook-secret"

// lateHooks hands the control plane's GitOps hooks to a loop built after
// the server started (the loop needs the server's store).
type lateHooks struct {
	mu   sync.RWMutex
	loop *reconciler.Loop
}

func (h *lateHooks) get() *reconciler.Loop {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.loop
}

func (h *lateHooks) Trigger(ctx context.Context, tenant, repo, ref string) (api.TriggerResult, error) {
	if l := h.get(); l != nil {
		return l.Trigger(ctx, tenant, repo, ref)
	}
	return api.TriggerResult{}, fmt.Errorf("gitops loop not started")
}

func (h *lateHooks) InventoryChanged(ctx context.Context, tenant, site string) {
	if l := h.get(); l != nil {
		l.InventoryChanged(ctx, tenant, site)
	}
}

func (h *lateHooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if l := h.get(); l != nil {
		l.Webhooks.ServeHTTP(w, r)
		return
	}
	http.Error(w, "not ready", http.StatusServiceUnavailable)
}

// gitops is a control plane with the GitOps loop, a tenant "acme", a real
// git repository registered with it, and a fake Gitea for statuses.
type gitops struct {
	t     *testing.T
	env   *cptest.Env
	acme  cptest.Tenant
	git   *gittest.Repo
	forge *forgetest.Server
	repo  api.Repository
	loop  *reconciler.Loop
	hc    *http.Client
	edge  *edgeSite // with gitopsConfig.edgeSite
}

type gitopsConfig struct {
	pollInterval   time.Duration // 0: polling off (webhooks drive the tests)
	offlineTimeout time.Duration
	// postgres runs the control plane on the throw-away Postgres.
	postgres bool
	// edgeSite, when set, is enrolled with the real agent's enrollment
	// (tenant acme is created with it) and returned in gitops.edge; its
	// agent starts when the test calls edge.start().
	edgeSite string
	// logger, when set, receives the control plane's and the reconciler's logs.
	logger *slog.Logger
}

func startGitOps(t *testing.T, cfg gitopsConfig) *gitops {
	t.Helper()
	hooks := &lateHooks{}
	env := cptest.Start(t, cptest.Options{Postgres: cfg.postgres, Logger: cfg.logger, Reconciler: hooks, Webhooks: hooks, Configure: func(o *controlplane.Options) {
		o.MinHeartbeatInterval = 300 * time.Millisecond
	}})
	g := &gitops{t: t, env: env, git: gittest.New(t), forge: forgetest.New(t), hc: env.HTTPClient(nil)}
	if cfg.edgeSite != "" {
		g.edge = newEdgeSite(t, env, "acme", cfg.edgeSite)
		g.acme = cptest.Tenant{ID: "acme", Client: env.UserClient(env.AdminToken, "acme")}
	} else {
		g.acme = env.NewTenant("acme")
	}
	repo, err := g.acme.Client.CreateRepo(t.Context(), api.CreateRepoRequest{
		Name: "fleet", URL: "file://" + g.git.Remote, Branch: "main", Path: "manifests", WebhookSecret: webhookSecret,
		ForgeKind: string(store.ForgeGitea), ForgeAPIURL: g.forge.URL, ForgeProject: "acme/fleet",
	})
	if err != nil {
		t.Fatalf("create repository: %v", err)
	}
	g.repo = repo
	poll := cfg.pollInterval
	if poll == 0 {
		poll = -1
	}
	dataDir := t.TempDir()
	loopLog := cfg.logger
	if loopLog == nil {
		loopLog = newTestSlog(t)
	}
	loop, err := reconciler.NewLoop(reconciler.Options{
		Store:     env.Store(),
		DataDir:   dataDir,
		Logger:    loopLog,
		PublicURL: env.URL,
		// Statuses go to the fake Gitea (as configured) and to git notes.
		Writers: func(ctx context.Context, r store.Repository) ([]forge.Writer, error) {
			gw, err := forge.NewGitea(forge.GitHubOptions{BaseURL: r.ForgeAPIURL, Owner: "acme", Repo: "fleet"})
			if err != nil {
				return nil, err
			}
			nw, err := forge.NewNotes(forge.NotesOptions{Dir: filepath.Join(dataDir, "notes"), RemoteURL: r.URL, LocalSources: localsource.Policy{Allow: true}})
			if err != nil {
				return nil, err
			}
			return []forge.Writer{gw, nw}, nil
		},
		Reporter:           forge.ReporterOptions{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxAttempts: 10000},
		PollInterval:       poll,
		ApplyCheckInterval: 50 * time.Millisecond,
		DriftInterval:      50 * time.Millisecond,
		OfflineTimeout:     cfg.offlineTimeout,
		// The repository is local; the fake forge and artifact servers are on loopback.
		AllowLocalSources: true,
		Egress:            egress.Policy{Allow: egress.Loopback()},
	})
	if err != nil {
		t.Fatal(err)
	}
	g.loop = loop
	hooks.mu.Lock()
	hooks.loop = loop
	hooks.mu.Unlock()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { loop.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return g
}

// fleet writes n sites with vms VMs each under manifests/ and registers the sites.
func (g *gitops) fleet(sites, vms int) []string {
	g.t.Helper()
	g.git.Fleet("manifests", sites, vms)
	var names []string
	for i := 1; i <= sites; i++ {
		names = append(names, gittest.SiteName(i))
	}
	return names
}

// webhook delivers a signed Gitea push (or pull_request) to the control plane.
func (g *gitops) webhook(event, delivery, body string, sign bool) (int, string) {
	g.t.Helper()
	req, err := http.NewRequestWithContext(g.t.Context(), http.MethodPost, g.env.URL+"/v1/webhooks/"+g.repo.ID, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	if !sign {
		mac = hmac.New(sha256.New, []byte("wrong secret"))
	}
	mac.Write([]byte(body))
	sig := hex.EncodeToString(mac.Sum(nil))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitea-Event", event)
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-Gitea-Delivery", delivery)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-Gitea-Signature", sig)
	req.Header.Set("X-Hub-Signature-256", "sha256="+sig)
	resp, err := g.hc.Do(req)
	if err != nil {
		g.t.Fatalf("deliver webhook: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// push delivers a signed push of main from before to after ("" = the
// branch's first commit) and fails the test unless it is accepted.
func (g *gitops) push(delivery, before, after string) {
	g.t.Helper()
	if before == "" {
		before = strings.Repeat("0", 40)
	}
	if code, body := g.webhook("push", delivery, pushPayload(before, after), true); code != 202 {
		g.t.Fatalf("push webhook %s: %d %s", delivery, code, body)
	}
}

// pushApplied pushes sha as main's first commit and waits until it is applied.
func (g *gitops) pushApplied(delivery, sha string) {
	g.t.Helper()
	g.push(delivery, "", sha)
	g.waitApplied(sha)
}

// waitApplied waits until the forge shows nkudo/apply=success for sha.
func (g *gitops) waitApplied(sha string) {
	g.t.Helper()
	eventually(g.t, "nkudo/apply success of "+sha[:12], func() bool { st, _ := g.forgeState(sha, "nkudo/apply"); return st == "success" })
}

func pushPayload(before, after string) string {
	return fmt.Sprintf(`{"ref":"refs/heads/main","before":%q,"after":%q,"repository":{"default_branch":"main","full_name":"acme/fleet"}}`, before, after)
}

func prPayload(pr int, head string) string {
	return fmt.Sprintf(`{"action":"opened","number":%d,"pull_request":{"number":%d,"head":{"sha":%q,"ref":"feature"},"base":{"ref":"main"}}}`, pr, pr, head)
}

// forgeState is the newest state the fake Gitea shows for a context.
func (g *gitops) forgeState(sha, context string) (string, string) {
	s, ok := g.forge.Latest(sha, context)
	if !ok {
		return "", ""
	}
	return s.State, s.Description
}

func (g *gitops) forgeStates(sha, context string) []string {
	var out []string
	for _, s := range g.forge.Statuses(sha) {
		if s.Context == context {
			out = append(out, s.State)
		}
	}
	return out
}

// apiStatus reads a commit status through the API.
func (g *gitops) apiStatus(sha, context string) api.CommitStatus {
	g.t.Helper()
	sts, err := g.acme.Client.CommitStatuses(g.t.Context(), g.repo.ID, sha)
	if err != nil {
		g.t.Fatalf("commit statuses: %v", err)
	}
	for _, s := range sts {
		if s.Context == context {
			return s
		}
	}
	return api.CommitStatus{}
}

func (g *gitops) plans() []api.Plan {
	g.t.Helper()
	ps, err := g.acme.Client.ListPlans(g.t.Context(), api.PlanFilter{})
	if err != nil {
		g.t.Fatalf("list plans: %v", err)
	}
	return ps
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// simAgent plays an edge agent through the api client's agent calls: it
// heartbeats its inventory, long-polls plans, applies them to an in-memory
// hypervisor and reports results.
type simAgent struct {
	t    *testing.T
	site string
	c    *api.Client

	mu   sync.Mutex
	vms  map[string]model.ObservedVM
	kick chan struct{}
}

func (g *gitops) startAgent(site string) *simAgent {
	g.t.Helper()
	ag := g.env.Enroll("acme", site)
	a := &simAgent{t: g.t, site: site, c: ag.Client, vms: map[string]model.ObservedVM{}, kick: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(g.t.Context())
	done := make(chan struct{})
	go func() { a.run(ctx); close(done) }()
	g.t.Cleanup(func() { cancel(); <-done })
	return a
}

func (a *simAgent) inventory() []model.ObservedVM {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]model.ObservedVM, 0, len(a.vms))
	for _, v := range a.vms {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// set changes a VM by hand (drift) and reports it.
func (a *simAgent) set(name string, fn func(*model.ObservedVM)) {
	a.mu.Lock()
	v := a.vms[name]
	fn(&v)
	a.vms[name] = v
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *simAgent) state(name string) model.VMState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.vms[name].State
}

func (a *simAgent) heartbeat(ctx context.Context) (int64, error) {
	hb, err := a.c.Heartbeat(ctx, api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion, VMs: a.inventory()})
	return hb.InventoryVersion, err
}

func (a *simAgent) run(ctx context.Context) {
	last := ""
	for ctx.Err() == nil {
		version, err := a.heartbeat(ctx)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		select {
		case <-a.kick:
			continue
		default:
		}
		p, err := a.c.WaitPlan(ctx, last, 200*time.Millisecond)
		if err != nil || p == nil {
			continue
		}
		if p.Status != model.PlanPending && p.Status != model.PlanInProgress {
			last = p.Plan.ID
			continue
		}
		if p.Plan.InventoryVersion != version {
			// The stale-plan guard: never run a plan computed against an
			// inventory that has moved; the control plane re-plans.
			continue
		}
		for _, act := range p.Plan.Actions {
			a.apply(act)
			if _, err := a.c.ReportResults(ctx, api.ActionResult{PlanID: p.Plan.ID, ActionID: act.ID, Status: model.ActionSucceeded, StartedAt: time.Now(), FinishedAt: time.Now()}); err != nil {
				break
			}
		}
		last = p.Plan.ID
	}
}

func (a *simAgent) apply(act model.Action) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v := a.vms[act.VM]
	switch act.Operation {
	case model.OpCreate:
		a.vms[act.VM] = model.ObservedVM{Name: act.VM, State: model.VMStopped, Managed: true, SpecHash: act.SpecHash, CPUs: act.Spec.CPUs, MemoryMiB: act.Spec.MemoryMiB}
	case model.OpStart:
		v.State = model.VMRunning
		a.vms[act.VM] = v
	case model.OpStop:
		v.State = model.VMStopped
		a.vms[act.VM] = v
	case model.OpDelete:
		delete(a.vms, act.VM)
	case model.OpResize:
		v.CPUs, v.MemoryMiB = act.Spec.CPUs, act.Spec.MemoryMiB
		a.vms[act.VM] = v
	}
}
