package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/agent"
	agentnetbird "github.com/nkudo/nkudo/agent/netbird"
	"github.com/nkudo/nkudo/agent/providers/cloudhypervisor"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/tests/fakes/chfake"
)

// ---- harness: a control plane, an edge agent and the fake hypervisor ----

// buildEdgeBinary builds a main package of this module into dir.
func buildEdgeBinary(t testing.TB, dir, pkg, name string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "github.com/nkudo/nkudo/"+pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// startEdgeCP starts a control plane that hands out a short heartbeat interval.
func startEdgeCP(t testing.TB, postgres bool) *cptest.Env {
	t.Helper()
	return cptest.Start(t, cptest.Options{Postgres: postgres, Configure: func(o *controlplane.Options) {
		o.MinHeartbeatInterval = 300 * time.Millisecond
	}})
}

// edgeSite is one enrolled site with its agent's state on disk.
type edgeSite struct {
	t             testing.TB
	env           *cptest.Env
	tenant, site  string
	state, pkiDir string
	bin           string // dir holding the fake cloud-hypervisor (and nkudo-edge when built)
	reqLog        string
	controlFile   string
	spec          model.VMSpec
	wrap          func(agent.ControlPlane) agent.ControlPlane
	cancel        context.CancelFunc
	done          chan error
	logger        *slog.Logger
	extraVMMEnv   []string
	// netbird, when set, is the agent's NetBird client (facts and joins).
	netbird *agentnetbird.Client
	// failover are more control-plane URLs the agent fails over to.
	failover []string
}

// newEdgeSite creates tenant and site, enrolls with the real enroll code
// (CA pinned by its fingerprint) and prepares a VM spec whose kernel is a
// file:// URL verified by sha256.
func newEdgeSite(t testing.TB, env *cptest.Env, tenant, site string) *edgeSite {
	t.Helper()
	state, err := os.MkdirTemp("", "edge") // short: unix socket paths are limited to 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	e := &edgeSite{t: t, env: env, tenant: tenant, site: site, state: state, pkiDir: filepath.Join(state, "pki"),
		bin: t.TempDir(), reqLog: filepath.Join(t.TempDir(), "ch-requests.jsonl")}
	e.controlFile = filepath.Join(e.bin, "ch-control.json")
	e.logger = slog.New(slog.NewTextHandler(edgeLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		e.stop()
		stopEdgeVMMs(t, state)
		if left := leftoverVMMs(filepath.Join(e.bin, "cloud-hypervisor")); len(left) > 0 {
			t.Errorf("VMMs still running after the test: %v", left)
		}
		os.RemoveAll(state)
	})
	buildEdgeBinary(t, e.bin, "tests/fakes/cloud-hypervisor", "cloud-hypervisor")
	env.NewTenant(tenant)
	env.NewSite(tenant, site)
	tok := env.EnrollmentToken(tenant, site)
	if _, err := agent.Enroll(t.Context(), agent.EnrollOptions{ControlPlane: env.URL, Token: tok.Token, CAHash: tok.CAFingerprint, PKIDir: e.pkiDir}, e.logger); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	kernel := filepath.Join(e.bin, "vmlinux")
	if err := os.WriteFile(kernel, []byte("fake kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("fake kernel"))
	e.spec = model.VMSpec{State: model.VMRunning, CPUs: 1, MaxCPUs: 2, MemoryMiB: 256, MaxMemoryMiB: 512,
		Kernel:    &model.Kernel{URL: "file://" + kernel, SHA256: hex.EncodeToString(sum[:]), Cmdline: "console=ttyS0"},
		Disks:     []model.Disk{{Name: "data", SizeGiB: 1}},
		CloudInit: &model.CloudInit{UserData: "#cloud-config\n{}\n"}}
	return e
}

type edgeLogWriter struct{ t testing.TB }

func (w edgeLogWriter) Write(p []byte) (int, error) {
	defer func() { recover() }() // a late line after the test ended must not panic
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// stopEdgeVMMs stops every VMM of the site, whichever agent (in-process or
// a killed nkudo-edge) launched it, through the provider's Shutdown.
func stopEdgeVMMs(t testing.TB, state string) {
	p, err := cloudhypervisor.New(cloudhypervisor.Options{StateDir: filepath.Join(state, "hypervisor")})
	if err != nil {
		t.Errorf("stop the site's VMMs: %v", err)
		return
	}
	if err := p.Shutdown(context.WithoutCancel(t.Context())); err != nil {
		t.Errorf("stop the site's VMMs: %v", err)
	}
}

// leftoverVMMs lists "pid args" of running processes of binary, killing
// them so that a leak is reported once, not left behind.
func leftoverVMMs(binary string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if args[0] == binary {
			out = append(out, fmt.Sprintf("%d %s", pid, strings.Join(args[1:], " ")))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return out
}

func (e *edgeSite) vmmEnv() []string {
	return append([]string{"CHFAKE_REQUEST_LOG=" + e.reqLog, "CHFAKE_CONTROL=" + e.controlFile}, e.extraVMMEnv...)
}

// start runs the agent in-process (the same wiring as `nkudo-edge run`).
func (e *edgeSite) start() {
	t := e.t
	t.Helper()
	id, err := agent.LoadIdentity(e.pkiDir)
	if err != nil {
		t.Fatal(err)
	}
	client, err := api.NewClient(api.ClientConfig{BaseURL: e.env.URL, FailoverURLs: e.failover, RootCAs: id.RootCAs(), Certificate: id.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	prov, err := cloudhypervisor.New(cloudhypervisor.Options{StateDir: filepath.Join(e.state, "hypervisor"),
		Binary: filepath.Join(e.bin, "cloud-hypervisor"), DisableNetworking: true, StopTimeout: 5 * time.Second,
		Env: e.vmmEnv(), Logger: e.logger, SiteKey: id.SiteKey()})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := agent.NewExecutor(filepath.Join(e.state, "agent"), prov, e.logger)
	if err != nil {
		t.Fatal(err)
	}
	var cp agent.ControlPlane = client
	if e.wrap != nil {
		cp = e.wrap(client)
	}
	var (
		nbFacts agent.NetBirdFacter
		nbJoin  agent.NetBirdJoiner
	)
	if e.netbird != nil {
		nbFacts, nbJoin = e.netbird, e.netbird
	}
	a := agent.New(agent.Config{Client: cp, Executor: ex, Facts: agent.FactsSource{StateDir: e.state, Hypervisor: prov, NetBird: nbFacts},
		Logger: e.logger, AgentVersion: "test", SiteRecipient: id.SiteRecipient(), PollWait: 2 * time.Second, FirstHeartbeat: 300 * time.Millisecond, NetBird: nbJoin})
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() {
		e.done <- a.Run(ctx)
		client.CloseIdleConnections()
	}()
}

// stop stops the in-process agent the way SIGTERM does.
func (e *edgeSite) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	if err := <-e.done; err != nil {
		e.t.Errorf("agent run: %v", err)
	}
	e.cancel = nil
}

func (e *edgeSite) vm(name string, state model.VMState) model.VirtualMachine {
	s := e.spec
	s.State = state
	return model.VirtualMachine{Name: name, Site: e.site, Spec: s}
}

func (e *edgeSite) desired(vms ...model.VirtualMachine) model.Desired {
	return model.Desired{
		Sites: []model.Site{{Name: e.site, Annotations: map[string]string{model.AnnotationAllowPrune: "true"}}},
		VMs:   vms,
	}
}

// waitEdge polls cond until it holds or the deadline passes.
func waitEdge(t testing.TB, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFirstHeartbeat waits until the site's agent has reported an inventory.
func (e *edgeSite) waitFirstHeartbeat() {
	e.t.Helper()
	waitEdge(e.t, "the first heartbeat", 20*time.Second, func() (bool, string) {
		inv := e.inventory()
		return inv.Reported, fmt.Sprint(inv)
	})
}

func (e *edgeSite) inventory() model.Inventory {
	inv, err := e.env.Store().Inventory(e.t.Context(), e.tenant, e.site)
	if err != nil {
		e.t.Fatalf("inventory: %v", err)
	}
	return inv
}

// plan runs the real planner against the stored inventory and stores the
// site's plan, as the reconciler does; nil when the site is converged.
func (e *edgeSite) plan(d model.Desired) *model.Plan {
	t := e.t
	t.Helper()
	inv, err := e.env.Store().Inventories(t.Context(), e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	res := diff.Plan(d, inv, diff.Options{Tenant: e.tenant, Commit: "c0ffee"})
	for _, s := range res.Sites {
		if s.Refused != "" {
			t.Fatalf("plan refused: %s", s.Refused)
		}
	}
	plans := res.Plans()
	if len(plans) == 0 {
		return nil
	}
	p := plans[0]
	if _, err := e.env.Store().StorePlan(t.Context(), store.Actor{Kind: store.ActorSystem, ID: "test"}, p, "", time.Now()); err != nil {
		t.Fatalf("store plan: %v", err)
	}
	return &p
}

// waitPlanDone waits for the stored plan to finish and fails on anything but success.
func (e *edgeSite) waitPlanDone(p *model.Plan) store.StoredPlan {
	t := e.t
	t.Helper()
	var sp store.StoredPlan
	waitEdge(t, "plan "+p.ID[:12]+" to finish", 30*time.Second, func() (bool, string) {
		var err error
		sp, err = e.env.Store().GetPlan(t.Context(), e.tenant, p.ID)
		if err != nil {
			return false, err.Error()
		}
		return sp.Status == model.PlanSucceeded || sp.Status == model.PlanFailed, string(sp.Status)
	})
	if sp.Status != model.PlanSucceeded {
		b, _ := json.MarshalIndent(sp.Actions, "", "  ")
		t.Fatalf("plan %s %s:\n%s", p.ID[:12], sp.Status, b)
	}
	return sp
}

// waitConverged waits until the reported inventory plans to nothing.
func (e *edgeSite) waitConverged(d model.Desired) model.Inventory {
	t := e.t
	t.Helper()
	var inv model.Inventory
	waitEdge(t, "the reported inventory to match the desired state", 30*time.Second, func() (bool, string) {
		all, err := e.env.Store().Inventories(t.Context(), e.tenant)
		if err != nil {
			return false, err.Error()
		}
		inv = all[e.site]
		res := diff.Plan(d, all, diff.Options{Tenant: e.tenant})
		return inv.Reported && len(res.Plans()) == 0, fmt.Sprintf("%+v", inv.VMs)
	})
	return inv
}

// chCalls returns "vm endpoint status" of every mutating hypervisor call.
func (e *edgeSite) chCalls() []string {
	entries, err := chfake.ReadRequestLog(e.reqLog)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, x := range entries {
		if x.Method != "PUT" {
			continue
		}
		if x.Received {
			out = append(out, fmt.Sprintf("%s %s received", filepath.Base(filepath.Dir(x.Socket)), x.Endpoint))
			continue
		}
		vm := filepath.Base(filepath.Dir(x.Socket))
		out = append(out, fmt.Sprintf("%s %s %d", vm, x.Endpoint, x.Status))
	}
	return out
}

// resultEvents counts the new (audited) results recorded per action.
func (e *edgeSite) resultEvents() map[string]int {
	evs, err := e.env.Store().ListAudit(e.t.Context(), e.tenant, 0, 10000)
	if err != nil {
		e.t.Fatal(err)
	}
	n := map[string]int{}
	for _, ev := range evs {
		if ev.Action == "action.result" {
			n[strings.TrimPrefix(ev.Object, "action/")]++
		}
	}
	return n
}

func observedVM(name string, state model.VMState, spec model.VMSpec) model.ObservedVM {
	return model.ObservedVM{Name: name, State: state, Managed: true, SpecHash: spec.Hash(), CPUs: spec.CPUs,
		MemoryMiB: spec.MemoryMiB, MaxCPUs: spec.EffectiveMaxCPUs(), MaxMemoryMiB: spec.EffectiveMaxMemoryMiB()}
}

func edgeBackends(t *testing.T, f func(t *testing.T, postgres bool)) {
	t.Run("sqlite", func(t *testing.T) { f(t, false) })
	t.Run("postgres", func(t *testing.T) { f(t, true) })
}

// ---- tests ----

func TestApplyPlanCreateStartStopDelete(t *testing.T) {
	edgeBackends(t, func(t *testing.T, postgres bool) {
		env := startEdgeCP(t, postgres)
		e := newEdgeSite(t, env, "acme", "store-1")
		e.start()
		e.waitFirstHeartbeat()

		// 1. create + start vm-a, create vm-b (stopped).
		d1 := e.desired(e.vm("vm-a", model.VMRunning), e.vm("vm-b", model.VMStopped))
		p1 := e.plan(d1)
		if p1 == nil {
			t.Fatal("no plan for two missing VMs")
		}
		var ops []string
		for _, a := range p1.Actions {
			ops = append(ops, string(a.Operation)+" "+a.VM)
		}
		if d := cmp.Diff([]string{"create vm-a", "create vm-b", "start vm-a"}, ops); d != "" {
			t.Fatalf("plan 1 (-want +got):\n%s", d)
		}
		e.waitPlanDone(p1)
		inv := e.waitConverged(d1)
		want := []model.ObservedVM{observedVM("vm-a", model.VMRunning, e.spec), observedVM("vm-b", model.VMStopped, e.spec)}
		if d := cmp.Diff(want, inv.VMs); d != "" {
			t.Errorf("inventory after plan 1 (-want +got):\n%s", d)
		}

		// 1b. resize the running vm-a within its headroom (live, vm.resize).
		bigger := e.vm("vm-a", model.VMRunning)
		bigger.Spec.CPUs, bigger.Spec.MemoryMiB = 2, 384
		d1b := e.desired(bigger, e.vm("vm-b", model.VMStopped))
		p1b := e.plan(d1b)
		if p1b == nil || len(p1b.Actions) != 1 || p1b.Actions[0].Operation != model.OpResize {
			t.Fatalf("plan 1b = %+v, want one resize", p1b)
		}
		e.waitPlanDone(p1b)
		inv = e.waitConverged(d1b)
		want = []model.ObservedVM{observedVM("vm-a", model.VMRunning, bigger.Spec), observedVM("vm-b", model.VMStopped, e.spec)}
		if d := cmp.Diff(want, inv.VMs); d != "" {
			t.Errorf("inventory after the resize (-want +got):\n%s", d)
		}

		// 2. stop vm-a, start vm-b.
		stopped := bigger
		stopped.Spec.State = model.VMStopped
		d2 := e.desired(stopped, e.vm("vm-b", model.VMRunning))
		p2 := e.plan(d2)
		e.waitPlanDone(p2)
		inv = e.waitConverged(d2)
		want = []model.ObservedVM{observedVM("vm-a", model.VMStopped, bigger.Spec), observedVM("vm-b", model.VMRunning, e.spec)}
		if d := cmp.Diff(want, inv.VMs); d != "" {
			t.Errorf("inventory after plan 2 (-want +got):\n%s", d)
		}

		// 3. delete both (the site opts in to pruning everything).
		d3 := e.desired()
		p3 := e.plan(d3)
		e.waitPlanDone(p3)
		inv = e.waitConverged(d3)
		if len(inv.VMs) != 0 {
			t.Errorf("inventory after plan 3: %+v", inv.VMs)
		}
		if p := e.plan(d3); p != nil {
			t.Errorf("converged site planned again: %+v", p.Actions)
		}

		wantCalls := []string{
			"vm-a vm.create 204", "vm-b vm.create 204", "vm-a vm.boot 204", // plan 1
			"vm-a vm.resize 204",                           // plan 1b
			"vm-a vm.power-button 204", "vm-b vm.boot 204", // plan 2
			"vm-b vm.power-button 204", // plan 3: stop the running vm-b
			"vm-a vm.delete 204", "vm-a vmm.shutdown 200", "vm-b vm.delete 204", "vm-b vmm.shutdown 200",
		}
		if d := cmp.Diff(wantCalls, e.chCalls()); d != "" {
			t.Errorf("hypervisor calls (-want +got):\n%s", d)
		}
		for id, n := range e.resultEvents() {
			if n != 1 {
				t.Errorf("action %s: %d results recorded, want 1", id[:12], n)
			}
		}
		if entries, _ := os.ReadDir(filepath.Join(e.state, "hypervisor", "vms")); len(entries) != 0 {
			t.Errorf("deleted VMs left files: %v", entries)
		}
	})
}

// flakyReports sits between the agent and the control plane: while block
// is set, reports never reach the server (it is unreachable for them);
// the first lose answers of reports that did reach it are lost, as with a
// connection broken after the server committed.
type flakyReports struct {
	agent.ControlPlane
	mu    sync.Mutex
	block bool
	lose  int
	lost  int
}

func (f *flakyReports) ReportResults(ctx context.Context, rs ...api.ActionResult) (api.ResultsResponse, error) {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block {
		return api.ResultsResponse{}, errors.New("dial tcp: connection refused (results blocked)")
	}
	resp, err := f.ControlPlane.ReportResults(ctx, rs...)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil && f.lost < f.lose {
		f.lost++
		return api.ResultsResponse{}, errors.New("connection reset by peer (response lost)")
	}
	return resp, err
}

func TestApplyPlanIdempotency(t *testing.T) {
	t.Run("re-delivered plan and lost result responses", func(t *testing.T) {
		env := startEdgeCP(t, false)
		e := newEdgeSite(t, env, "acme", "store-1")
		flaky := &flakyReports{block: true}
		e.wrap = func(c agent.ControlPlane) agent.ControlPlane { flaky.ControlPlane = c; return flaky }
		e.start()
		e.waitFirstHeartbeat()
		d := e.desired(e.vm("vm-a", model.VMRunning), e.vm("vm-b", model.VMRunning))
		p := e.plan(d)
		// The agent executes everything but cannot report: the plan stays active.
		waitEdge(t, "every action to have a cached outcome", 30*time.Second, func() (bool, string) {
			for _, a := range p.Actions {
				if r, ok, _ := edgeCache(t, e).Get(a.ID); !ok || !r.Final() {
					return false, a.ID
				}
			}
			return true, ""
		})
		before := e.chCalls()
		if sp, _ := env.Store().GetPlan(t.Context(), e.tenant, p.ID); sp.Status != model.PlanPending {
			t.Fatalf("plan status %s while results are blocked, want pending", sp.Status)
		}
		// Restart: the new agent gets the same plan delivered again, answers
		// it from its cache, and its reports lose their first 3 answers.
		e.stop()
		flaky.mu.Lock()
		flaky.block, flaky.lose = false, 3
		flaky.mu.Unlock()
		e.start()
		e.waitPlanDone(p)
		e.waitConverged(d)
		waitEdge(t, "the outbox to drain", 20*time.Second, func() (bool, string) {
			ob, _ := agent.OpenOutbox(filepath.Join(e.state, "agent", "outbox", "results"), 0)
			return ob.Len() == 0, fmt.Sprint(ob.Len())
		})
		flaky.mu.Lock()
		lost := flaky.lost
		flaky.mu.Unlock()
		if lost != 3 {
			t.Errorf("lost %d answers, want 3", lost)
		}
		if d := cmp.Diff(before, e.chCalls()); d != "" {
			t.Errorf("hypervisor called again after the re-delivery (-before +after):\n%s", d)
		}
		assertOncePerVM(t, e.chCalls(), []string{"vm.create", "vm.boot"}, "vm-a", "vm-b")
		assertResultsOnce(t, e, p)
	})

	t.Run("agent killed mid-plan and restarted", func(t *testing.T) {
		env := startEdgeCP(t, false)
		e := newEdgeSite(t, env, "acme", "store-1")
		buildEdgeBinary(t, e.bin, "cmd/nkudo-edge", "nkudo-edge")
		// vm.boot takes 3s, so the agent can be killed while a boot is in flight.
		if err := os.WriteFile(e.controlFile, []byte(`{"faults":[{"endpoint":"vm.boot","delay":"3s"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		proc := e.startProcess()
		e.waitFirstHeartbeat()
		d := e.desired(e.vm("vm-a", model.VMRunning), e.vm("vm-b", model.VMRunning))
		p := e.plan(d)
		startA := planActionID(t, p, model.OpStart, "vm-a")
		waitEdge(t, "vm-a's boot to be in flight", 20*time.Second, func() (bool, string) {
			c := e.chCalls()
			return slices.Contains(c, "vm-a vm.boot received"), fmt.Sprint(c)
		})
		if b, err := os.ReadFile(filepath.Join(e.state, "agent", "actions", startA+".json")); err != nil || !strings.Contains(string(b), `"status":"running"`) {
			t.Fatalf("start vm-a in flight but its cache record is %s (%v), want the started marker", b, err)
		}
		if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		proc.Wait()
		// The VMM finishes the boot the dead agent asked for.
		waitEdge(t, "vm-a's boot to complete in the VMM", 20*time.Second, func() (bool, string) {
			c := e.chCalls()
			return slices.Contains(c, "vm-a vm.boot 204"), fmt.Sprint(c)
		})
		os.WriteFile(e.controlFile, []byte(`{"faults":[]}`), 0o644)
		proc = e.startProcess()
		e.waitPlanDone(p)
		e.waitConverged(d)
		proc.Process.Signal(syscall.SIGTERM)
		if err := proc.Wait(); err != nil {
			t.Errorf("agent exit after SIGTERM: %v", err)
		}
		calls := e.chCalls()
		assertOncePerVM(t, calls, []string{"vm.create", "vm.boot"}, "vm-a", "vm-b")
		assertResultsOnce(t, e, p)
		rec, ok, _ := edgeCache(t, e).Get(startA)
		if !ok || !strings.Contains(string(rec.Output), `"recovered":true`) {
			t.Errorf("start vm-a was not recovered from the VM's real state: %+v", rec)
		}
	})
}

func edgeCache(t testing.TB, e *edgeSite) *agent.Cache {
	c, err := agent.OpenCache(filepath.Join(e.state, "agent", "actions"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func planActionID(t testing.TB, p *model.Plan, op model.Operation, vm string) string {
	for _, a := range p.Actions {
		if a.Operation == op && a.VM == vm {
			return a.ID
		}
	}
	t.Fatalf("plan has no %s %s", op, vm)
	return ""
}

// assertOncePerVM checks from the fake's request log that each endpoint
// succeeded exactly once per VM.
func assertOncePerVM(t *testing.T, calls, endpoints []string, vms ...string) {
	t.Helper()
	for _, vm := range vms {
		for _, ep := range endpoints {
			n := 0
			for _, c := range calls {
				f := strings.Fields(c)
				if f[0] == vm && f[1] == ep && strings.HasPrefix(f[2], "2") {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s %s succeeded %d times, want exactly once; calls: %v", vm, ep, n, calls)
			}
		}
	}
}

// assertResultsOnce checks that every action of p was recorded exactly once, succeeded.
func assertResultsOnce(t *testing.T, e *edgeSite, p *model.Plan) {
	t.Helper()
	n := e.resultEvents()
	for _, a := range p.Actions {
		if n[a.ID] != 1 {
			t.Errorf("%s %s: %d results recorded, want exactly 1", a.Operation, a.VM, n[a.ID])
		}
	}
	sp, err := e.env.Store().GetPlan(t.Context(), e.tenant, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range sp.Actions {
		if a.Status != model.ActionSucceeded {
			t.Errorf("action %+v not succeeded", a)
		}
	}
}

// startProcess runs the real nkudo-edge binary as the site's agent.
func (e *edgeSite) startProcess() *exec.Cmd {
	t := e.t
	t.Helper()
	cmd := exec.Command(filepath.Join(e.bin, "nkudo-edge"), "run", "--control-plane", e.env.URL,
		"--state-dir", e.state, "--pki-dir", e.pkiDir, "--hypervisor", filepath.Join(e.bin, "cloud-hypervisor"),
		"--netbird", filepath.Join(e.bin, "no-netbird"), "--disable-networking", "--poll-wait", "2s", "--stop-timeout", "5s")
	cmd.Env = append(os.Environ(), e.vmmEnv()...)
	cmd.Stdout, cmd.Stderr = edgeLogWriter{t}, edgeLogWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

func TestAgentFinishesCurrentActionOnSIGTERM(t *testing.T) {
	env := startEdgeCP(t, false)
	e := newEdgeSite(t, env, "acme", "store-1")
	buildEdgeBinary(t, e.bin, "cmd/nkudo-edge", "nkudo-edge")
	if err := os.WriteFile(e.controlFile, []byte(`{"faults":[{"endpoint":"vm.boot","delay":"2s"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	proc := e.startProcess()
	e.waitFirstHeartbeat()
	d := e.desired(e.vm("vm-a", model.VMRunning), e.vm("vm-b", model.VMRunning))
	p := e.plan(d)
	startA := planActionID(t, p, model.OpStart, "vm-a")
	waitEdge(t, "start vm-a to begin", 20*time.Second, func() (bool, string) {
		r, ok, _ := edgeCache(t, e).Get(startA)
		return ok, fmt.Sprint(r)
	})
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := proc.Wait(); err != nil {
		t.Fatalf("agent exit after SIGTERM: %v", err)
	}
	r, ok, _ := edgeCache(t, e).Get(startA)
	if !ok || r.Status != model.ActionSucceeded {
		t.Fatalf("the action in progress at SIGTERM = %+v, want it finished and succeeded", r)
	}
	startB := planActionID(t, p, model.OpStart, "vm-b")
	if _, ok, _ := edgeCache(t, e).Get(startB); ok {
		t.Error("the agent started another action after SIGTERM")
	}
	// Its result was delivered before the agent exited.
	if n := e.resultEvents()[startA]; n != 1 {
		t.Errorf("start vm-a results recorded: %d, want 1", n)
	}
}

// BenchmarkAgentIdleRSS runs the real nkudo-edge binary against a control
// plane with two VMs applied, lets it idle (heartbeats and long-polls) and
// reports its resident memory and the binary's size.
func BenchmarkAgentIdleRSS(b *testing.B) {
	env := startEdgeCP(b, false)
	e := newEdgeSite(b, env, "acme", "store-1")
	bin := buildEdgeBinary(b, e.bin, "cmd/nkudo-edge", "nkudo-edge")
	proc := e.startProcess()
	e.waitFirstHeartbeat()
	d := e.desired(e.vm("vm-a", model.VMRunning), e.vm("vm-b", model.VMRunning))
	e.waitPlanDone(e.plan(d))
	e.waitConverged(d)
	var rss int64
	for b.Loop() {
		time.Sleep(3 * time.Second) // idle: heartbeats every 300ms, long-polls of 2s
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", proc.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				rss, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			}
		}
	}
	fi, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(rss), "KiB-idle-rss")
	b.ReportMetric(float64(fi.Size())/(1<<20), "MiB-binary")
	proc.Process.Signal(syscall.SIGTERM)
	proc.Wait()
}
