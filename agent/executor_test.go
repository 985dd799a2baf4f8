package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/agent/internal/vmmtest"
	"github.com/nkudo/nkudo/agent/providers/cloudhypervisor"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/tests/fakes/chfake"
)

var fakeCH string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agent-test-bin")
	if err != nil {
		panic(err)
	}
	fakeCH = filepath.Join(dir, "cloud-hypervisor")
	if out, err := exec.Command("go", "build", "-o", fakeCH, "github.com/nkudo/nkudo/tests/fakes/cloud-hypervisor").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build fake: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	if msg := vmmtest.Check(fakeCH); msg != "" {
		fmt.Fprintln(os.Stderr, "FAIL:", msg)
		code = 1
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

type rig struct {
	state, reqLog string
	prov          *cloudhypervisor.Provider
	ex            *agent.Executor
	spec          model.VMSpec
}

func newRig(t testing.TB, env ...string) *rig {
	t.Helper()
	state, err := os.MkdirTemp("", "ag")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	r := &rig{state: state, reqLog: filepath.Join(t.TempDir(), "requests.jsonl")}
	kernel := filepath.Join(t.TempDir(), "vmlinux")
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	sum := sha256.Sum256([]byte("kernel"))
	r.spec = model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256,
		Kernel: &model.Kernel{URL: "file://" + kernel, SHA256: hex.EncodeToString(sum[:])}}
	r.prov, err = cloudhypervisor.New(cloudhypervisor.Options{StateDir: filepath.Join(state, "p"), Binary: fakeCH,
		DisableNetworking: true, StopTimeout: 2 * time.Second, Env: append([]string{"CHFAKE_REQUEST_LOG=" + r.reqLog}, env...)})
	if err != nil {
		t.Fatal(err)
	}
	// Stops every VMM of the rig, also those a test's second executor
	// (an agent restart) reached; runs before the state dir is removed.
	t.Cleanup(func() {
		if err := r.prov.Shutdown(context.WithoutCancel(t.Context())); err != nil {
			t.Errorf("stop the rig's VMMs: %v", err)
		}
	})
	r.ex = r.executor(t)
	return r
}

func (r *rig) executor(t testing.TB) *agent.Executor {
	ex, err := agent.NewExecutor(filepath.Join(r.state, "agent"), r.prov, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func (r *rig) calls(t *testing.T) []string {
	entries, err := chfake.ReadRequestLog(r.reqLog)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Method == "PUT" && !e.Received {
			out = append(out, e.Endpoint)
		}
	}
	return out
}

func (r *rig) plan(version int64, ops ...string) model.Plan {
	p := model.Plan{ID: fmt.Sprintf("plan-v%d-%d", version, len(ops)), Tenant: "t", Site: "s", InventoryVersion: version}
	for i, op := range ops {
		o, vm, _ := strings.Cut(op, " ")
		a := model.Action{ID: fmt.Sprintf("a%d-%s-%s-v%d", i, o, vm, version), Operation: model.Operation(o), VM: vm}
		if a.Operation == model.OpCreate {
			s := r.spec
			a.Spec, a.SpecHash = &s, s.Hash()
		}
		p.Actions = append(p.Actions, a)
	}
	return p
}

// results lists "actionID status" of the queued results, oldest first.
func results(t *testing.T, ex *agent.Executor) []string {
	t.Helper()
	entries, err := ex.Results.Peek(1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Result.ActionID+" "+string(e.Result.Status))
	}
	return out
}

func TestExecutePlanInOrderAndReportEachResult(t *testing.T) {
	r := newRig(t)
	p := r.plan(1, "create vm-a", "start vm-a", "stop vm-a", "delete vm-a")
	out, err := r.ex.Execute(t.Context(), p, 1, nil)
	if err != nil || out != agent.OutcomeDone {
		t.Fatalf("execute = %s, %v", out, err)
	}
	if d := cmp.Diff([]string{"vm.create", "vm.boot", "vm.power-button", "vm.delete", "vmm.shutdown"}, r.calls(t)); d != "" {
		t.Errorf("hypervisor calls (-want +got):\n%s", d)
	}
	var want []string
	for _, a := range p.Actions {
		want = append(want, a.ID+" running", a.ID+" succeeded")
	}
	if d := cmp.Diff(want, results(t, r.ex)); d != "" {
		t.Errorf("queued results (-want +got):\n%s", d)
	}
	logs, _ := r.ex.Logs.Peek(1000)
	for i, e := range logs {
		if e.Log.Seq != int64(i+1) || e.Log.PlanID != p.ID {
			t.Fatalf("log %d: seq %d plan %s", i, e.Log.Seq, e.Log.PlanID)
		}
	}
	if len(logs) < len(p.Actions) {
		t.Errorf("only %d log lines", len(logs))
	}

	// The same plan again (lost responses, a restart): cached results, no calls.
	before := len(r.calls(t))
	ex2 := r.executor(t) // a fresh executor over the same state, as after a restart
	if out, err := ex2.Execute(t.Context(), p, 5, nil); err != nil || out != agent.OutcomeDone {
		t.Fatalf("re-delivered plan = %s, %v (a plan this agent started is never stale)", out, err)
	}
	if after := len(r.calls(t)); after != before {
		t.Errorf("re-delivered plan made %d hypervisor calls", after-before)
	}
	if got := results(t, ex2); len(got) != len(want) {
		t.Errorf("pending results after re-delivery: %d, want %d (duplicates of pending results are not queued)", len(got), len(want))
	}
}

func TestInterruptedActionsAreExaminedNotRepeated(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	p := r.plan(1, "create vm-a", "start vm-a")
	// The agent crashed after vm.create succeeded but before recording the
	// result: the cache holds only the "started" marker.
	if err := r.prov.Create(ctx, "vm-a", r.spec); err != nil {
		t.Fatal(err)
	}
	if err := r.ex.Cache.Put(agent.Record{Operation: model.OpCreate, VM: "vm-a",
		ActionResult: model.ActionResult{PlanID: p.ID, ActionID: p.Actions[0].ID, Status: model.ActionRunning, StartedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if out, err := r.ex.Execute(ctx, p, 1, nil); err != nil || out != agent.OutcomeDone {
		t.Fatalf("execute = %s, %v", out, err)
	}
	if d := cmp.Diff([]string{"vm.create", "vm.boot"}, r.calls(t)); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	rec, ok, _ := r.ex.Cache.Get(p.Actions[0].ID)
	var output map[string]any
	json.Unmarshal(rec.Output, &output)
	if !ok || rec.Status != model.ActionSucceeded || output["recovered"] != true {
		t.Errorf("recovered create record = %+v", rec)
	}
	// A start interrupted before the VM booted is re-executed.
	p2 := r.plan(2, "stop vm-a", "start vm-a")
	r.ex.Execute(ctx, model.Plan{ID: "stop-only", InventoryVersion: 2, Actions: p2.Actions[:1]}, 2, nil)
	r.ex.Cache.Put(agent.Record{Operation: model.OpStart, VM: "vm-a",
		ActionResult: model.ActionResult{PlanID: p2.ID, ActionID: p2.Actions[1].ID, Status: model.ActionRunning}})
	before := len(r.calls(t))
	r.ex.Execute(ctx, model.Plan{ID: p2.ID, InventoryVersion: 2, Actions: p2.Actions[1:]}, 2, nil)
	if got := r.calls(t)[before:]; !cmp.Equal(got, []string{"vm.boot"}) {
		t.Errorf("re-executed interrupted start: calls %v", got)
	}
}

func TestStalePlanIsNotExecuted(t *testing.T) {
	r := newRig(t)
	p := r.plan(3, "create vm-a", "start vm-a")
	out, err := r.ex.Execute(t.Context(), p, 4, nil)
	if err != nil || out != agent.OutcomeStale {
		t.Fatalf("execute = %s, %v", out, err)
	}
	if c := r.calls(t); len(c) != 0 {
		t.Errorf("stale plan called the hypervisor: %v", c)
	}
	entries, err := r.ex.Results.Peek(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(p.Actions) {
		t.Fatalf("%d stale results, want one per action (%d)", len(entries), len(p.Actions))
	}
	for i, e := range entries {
		if e.Result.ActionID != p.Actions[i].ID || e.Result.Status != model.ActionSkipped || !strings.Contains(e.Result.Error, "stale plan") {
			t.Errorf("stale result %d = %+v, want action %s skipped as a stale plan", i, *e.Result, p.Actions[i].ID)
		}
	}
}

func TestNewerPlanSupersedesAfterCurrentAction(t *testing.T) {
	r := newRig(t)
	p := r.plan(1, "create vm-a", "start vm-a")
	out, err := r.ex.Execute(t.Context(), p, 1, func() agent.Stop { return agent.Stop{Newer: true} })
	if err != nil || out != agent.OutcomeSuperseded {
		t.Fatalf("execute = %s, %v", out, err)
	}
	if d := cmp.Diff([]string{"vm.create"}, r.calls(t)); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
}

func TestCancelledPlanSkipsTheRest(t *testing.T) {
	tests := []struct {
		name      string
		cancelAt  int // the stop call (from 0, one per action) that first says cancelled
		wantCalls []string
		wantRun   int // actions executed, the rest skipped
	}{
		{"before the first action", 0, nil, 0},
		{"after the first action", 1, []string{"vm.create"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			p := r.plan(1, "create vm-a", "start vm-a", "create vm-b")
			const why = "superseded: commit 1a2b cancelled the plan; not executed"
			asked := 0
			out, err := r.ex.Execute(t.Context(), p, 1, func() agent.Stop {
				defer func() { asked++ }()
				if asked >= tc.cancelAt {
					return agent.Stop{Cancelled: why}
				}
				return agent.Stop{}
			})
			if err != nil || out != agent.OutcomeCancelled {
				t.Fatalf("execute = %s, %v", out, err)
			}
			if d := cmp.Diff(tc.wantCalls, r.calls(t)); d != "" {
				t.Errorf("calls (-want +got):\n%s", d)
			}
			entries, err := r.ex.Results.Peek(100)
			if err != nil {
				t.Fatal(err)
			}
			skipped := map[string]string{}
			for _, e := range entries {
				if e.Result.Status == model.ActionSkipped {
					skipped[e.Result.ActionID] = e.Result.Error
				}
			}
			want := map[string]string{}
			for _, a := range p.Actions[tc.wantRun:] {
				want[a.ID] = why
				// Not cached: a plan made active again, or a later plan
				// sharing the action, still executes it.
				if _, ok, _ := r.ex.Cache.Get(a.ID); ok {
					t.Errorf("skipped action %s was cached", a.ID)
				}
			}
			if d := cmp.Diff(want, skipped); d != "" {
				t.Errorf("skipped results (-want +got):\n%s", d)
			}
		})
	}
}

func TestFailureSkipsTheRestWithTheAPIError(t *testing.T) {
	r := newRig(t, `CHFAKE_FAULTS=[{"endpoint":"vm.boot","status":500,"error":"Error booting VM: kvm unavailable"}]`)
	p := r.plan(1, "create vm-a", "start vm-a", "create vm-b")
	if _, err := r.ex.Execute(t.Context(), p, 1, nil); err != nil {
		t.Fatal(err)
	}
	entries, err := r.ex.Results.Peek(100)
	if err != nil {
		t.Fatal(err)
	}
	final := map[string]api.ActionResult{}
	for _, e := range entries {
		if e.Result.Status != model.ActionRunning {
			final[e.Result.ActionID] = *e.Result
		}
	}
	if s := final[p.Actions[1].ID]; s.Status != model.ActionFailed || !strings.Contains(s.Error, "kvm unavailable") {
		t.Errorf("start result = %+v", s)
	}
	if s := final[p.Actions[2].ID]; s.Status != model.ActionSkipped || !strings.Contains(s.Error, "failed earlier in the plan") {
		t.Errorf("action after the failure = %+v", s)
	}
}

func TestOutboxBoundedOldestFirstDurable(t *testing.T) {
	dir := t.TempDir()
	o, err := agent.OpenOutbox(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if err := o.Add(agent.OutboxEntry{Log: &api.LogLine{PlanID: "p", Seq: int64(i), Line: "l"}}); err != nil {
			t.Fatal(err)
		}
	}
	o.Add(agent.OutboxEntry{Key: "k", Log: &api.LogLine{PlanID: "p", Seq: 6}})
	o.Add(agent.OutboxEntry{Key: "k", Log: &api.LogLine{PlanID: "p", Seq: 7}}) // duplicate key: ignored
	o2, err := agent.OpenOutbox(dir, 3)                                        // reopen: as after a restart
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := o2.Peek(10)
	var seqs []int64
	for _, e := range entries {
		seqs = append(seqs, e.Log.Seq)
	}
	if d := cmp.Diff([]int64{4, 5, 6}, seqs); d != "" {
		t.Errorf("pending (-want +got):\n%s", d)
	}
	if o2.Dropped() != 3 {
		t.Errorf("dropped = %d, want 3", o2.Dropped())
	}
	if err := o2.Remove(entries[0]); err != nil {
		t.Fatal(err)
	}
	if o2.Len() != 2 {
		t.Errorf("len = %d", o2.Len())
	}
}

// pendingResults lists "plan action status" of the queued results, oldest first.
func pendingResults(t *testing.T, ex *agent.Executor) []string {
	t.Helper()
	entries, err := ex.Results.Peek(1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Result.PlanID+" "+e.Result.ActionID+" "+string(e.Result.Status))
	}
	return out
}

// Two plans computed against the same inventory version carry the same
// action with the same ID (the planner hashes the version, not the plan).
// The shared action runs once, and each plan gets its outcome under its own
// plan ID, even while the first plan's outcome still waits in the outbox.
func TestPlansSharingAnActionEachGetItsOutcome(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	p1 := r.plan(1, "create vm-a", "start vm-a")
	if out, err := r.ex.Execute(ctx, p1, 1, nil); err != nil || out != agent.OutcomeDone {
		t.Fatalf("plan 1 = %s, %v", out, err)
	}
	shared := p1.Actions[0]
	p2 := r.plan(1, "create vm-a", "create vm-b")
	p2.ID = "plan-2"
	p2.Actions[0] = shared
	if out, err := r.ex.Execute(ctx, p2, 1, nil); err != nil || out != agent.OutcomeDone {
		t.Fatalf("plan 2 = %s, %v", out, err)
	}
	if d := cmp.Diff([]string{"vm.create", "vm.boot", "vm.create"}, r.calls(t)); d != "" {
		t.Errorf("hypervisor calls (-want +got):\n%s", d)
	}
	want := []string{
		p1.ID + " " + p1.Actions[0].ID + " running", p1.ID + " " + p1.Actions[0].ID + " succeeded",
		p1.ID + " " + p1.Actions[1].ID + " running", p1.ID + " " + p1.Actions[1].ID + " succeeded",
		"plan-2 " + shared.ID + " succeeded", // no start: nothing was executed
		"plan-2 " + p2.Actions[1].ID + " running", "plan-2 " + p2.Actions[1].ID + " succeeded",
	}
	if d := cmp.Diff(want, pendingResults(t, r.ex)); d != "" {
		t.Errorf("queued results (-want +got):\n%s", d)
	}
	entries, _ := r.ex.Results.Peek(1000)
	if len(entries) != len(want) {
		t.Fatalf("%d queued results, want %d", len(entries), len(want))
	}
	if out := string(entries[4].Result.Output); !strings.Contains(out, `"cachedFromPlan":"`+p1.ID+`"`) {
		t.Errorf("replayed outcome's output %s does not name plan 1", out)
	}
	logs, _ := r.ex.Logs.Peek(1000)
	var p2log []string
	for _, e := range logs {
		if e.Log.PlanID == "plan-2" {
			p2log = append(p2log, e.Log.Line)
		}
	}
	if all := strings.Join(p2log, "\n"); !strings.Contains(all, "create vm-a: done earlier under plan "+p1.ID) {
		t.Errorf("plan 2's log does not account for the shared action:\n%s", all)
	}

	// Plan 2 delivered again (lost answers): nothing new is queued.
	if _, err := r.ex.Execute(ctx, p2, 1, nil); err != nil {
		t.Fatal(err)
	}
	if got := len(pendingResults(t, r.ex)); got != len(want) {
		t.Errorf("after plan 2 was delivered again: %d queued results, want %d", got, len(want))
	}
	// The cache still holds plan 1's own record of the shared action.
	if rec, ok, _ := r.ex.Cache.Get(shared.ID); !ok || rec.PlanID != p1.ID || rec.Status != model.ActionSucceeded {
		t.Errorf("cached record of the shared action = %+v", rec)
	}
}

// A plan that shares an action with one this agent ran is not "started" by
// that: once the agent has reported a newer inventory it is stale, and its
// refusal leaves the other plan's record alone.
func TestSharedActionDoesNotBypassTheStaleGuard(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	p1 := r.plan(1, "create vm-a", "start vm-a")
	if out, err := r.ex.Execute(ctx, p1, 1, nil); err != nil || out != agent.OutcomeDone {
		t.Fatalf("plan 1 = %s, %v", out, err)
	}
	p2 := r.plan(1, "create vm-a", "create vm-b")
	p2.ID = "plan-2"
	p2.Actions[0] = p1.Actions[0]
	before := len(r.calls(t))
	out, err := r.ex.Execute(ctx, p2, 2, nil)
	if err != nil || out != agent.OutcomeStale {
		t.Fatalf("plan 2 computed against version 1, agent at version 2 = %s, %v; want stale", out, err)
	}
	if after := len(r.calls(t)); after != before {
		t.Errorf("stale plan made %d hypervisor calls", after-before)
	}
	if rec, ok, _ := r.ex.Cache.Get(p1.Actions[0].ID); !ok || rec.PlanID != p1.ID || rec.Status != model.ActionSucceeded {
		t.Errorf("cached record of the shared action after the stale plan = %+v", rec)
	}
	var skipped []string
	for _, s := range pendingResults(t, r.ex) {
		if strings.HasPrefix(s, "plan-2 ") {
			skipped = append(skipped, s)
		}
	}
	want := []string{"plan-2 " + p2.Actions[0].ID + " skipped", "plan-2 " + p2.Actions[1].ID + " skipped"}
	if d := cmp.Diff(want, skipped); d != "" {
		t.Errorf("plan 2's results (-want +got):\n%s", d)
	}
}

// A record the agent cached before Record embedded model.ActionResult (its
// fields in another order) reads back whole, and a record written now has
// the same keys, so an upgrade or a downgrade keeps the cache.
func TestCacheRecordFormat(t *testing.T) {
	dir := t.TempDir()
	old := `{"planId":"p1","actionId":"a1","operation":"create","vm":"web","status":"failed","error":"boom","output":{"pid":7},"startedAt":"2026-03-01T12:00:00Z","finishedAt":"2026-03-01T12:00:01Z"}`
	if err := os.WriteFile(filepath.Join(dir, "a1.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	cache, err := agent.OpenCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := cache.Get("a1")
	if err != nil || !ok {
		t.Fatalf("Get = %v, %v", ok, err)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	want := agent.Record{Operation: model.OpCreate, VM: "web", ActionResult: model.ActionResult{PlanID: "p1", ActionID: "a1",
		Status: model.ActionFailed, Error: "boom", Output: json.RawMessage(`{"pid":7}`), StartedAt: at, FinishedAt: at.Add(time.Second)}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("old record (-want +got):\n%s", d)
	}
	if err := cache.Put(got); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "a1.json"))
	if err != nil {
		t.Fatal(err)
	}
	var oldKeys, newKeys map[string]json.RawMessage
	if err := json.Unmarshal([]byte(old), &oldKeys); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &newKeys); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(oldKeys, newKeys); d != "" {
		t.Errorf("record written now differs from the old format (-old +new):\n%s", d)
	}
}
