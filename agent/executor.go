package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
)

// Outcome says how an Execute call ended.
type Outcome string

const (
	// OutcomeDone: every action has a final result.
	OutcomeDone Outcome = "done"
	// OutcomeSuperseded: a newer plan arrived; the rest was left to it.
	OutcomeSuperseded Outcome = "superseded"
	// OutcomeStale: the plan was computed against an older inventory and was not executed.
	OutcomeStale Outcome = "stale"
	// OutcomeInterrupted: the context ended between actions (shutdown).
	OutcomeInterrupted Outcome = "interrupted"
	// OutcomeCancelled: the control plane ended the plan without a newer
	// one; the actions not started were reported skipped.
	OutcomeCancelled Outcome = "cancelled"
)

// Stop is what Execute asks before each action; the zero value goes on.
type Stop struct {
	// Newer: a newer plan is waiting; the rest is left to it (asked from
	// the second action on: the first was chosen as the newest).
	Newer bool
	// Cancelled, when not empty, says why the plan ended without a newer
	// one (asked before every action, the first included): no further
	// action starts, and each one not started is reported skipped with
	// this reason.
	Cancelled string
}

// Executor applies plans with a Provider, one action at a time, in plan
// order. Each outcome is written to the Cache before it is queued for the
// control plane, so a plan delivered again re-executes nothing, and an
// action cut short by a crash is examined against the provider's real state
// instead of being repeated blindly.
type Executor struct {
	Provider Provider
	Cache    *Cache
	// Results and Logs buffer what is reported; Deliver sends them.
	Results *Outbox
	Logs    *Outbox
	Logger  *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ActionTimeout bounds one action; zero means 30 minutes.
	ActionTimeout time.Duration
	seqs          *seqStore
	changes       atomic.Int64

	// heldMu orders queueing: a result is added to held, then held is
	// flushed to Results oldest first, so the outbox never holds a result
	// newer than one still held.
	heldMu sync.Mutex
	// held are results the outbox refused to store (disk full, I/O
	// error). A final outcome among them is already in the Cache; the
	// agent retries them (Requeue) until the outbox takes them. Should the
	// agent stop first, the plan is delivered again at the next start and
	// its cached outcomes replayed.
	held []OutboxEntry
}

// Changes counts the actions this executor has applied to the provider
// (succeeded or not: a failed action may have changed something). The agent
// compares it with the count at its last acknowledged heartbeat to know
// whether the control plane's inventory is behind. Replayed and skipped
// actions change nothing and are not counted.
func (e *Executor) Changes() int64 { return e.changes.Load() }

// NewExecutor opens the executor's state under dir (cache, outboxes, log sequences).
func NewExecutor(dir string, p Provider, logger *slog.Logger) (*Executor, error) {
	cache, err := OpenCache(filepath.Join(dir, "actions"))
	if err != nil {
		return nil, err
	}
	results, err := OpenOutbox(filepath.Join(dir, "outbox", "results"), 10000)
	if err != nil {
		return nil, err
	}
	logs, err := OpenOutbox(filepath.Join(dir, "outbox", "logs"), 50000)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	seqDir := filepath.Join(dir, "logseq")
	if err := os.MkdirAll(seqDir, 0o700); err != nil {
		return nil, fmt.Errorf("log sequences: %w", err)
	}
	return &Executor{Provider: p, Cache: cache, Results: results, Logs: logs, Logger: logger.With("component", "executor"),
		seqs: &seqStore{dir: seqDir}}, nil
}

func (e *Executor) now() time.Time {
	if e.Now != nil {
		return e.Now().UTC()
	}
	return time.Now().UTC()
}

// logLine queues one execution log line for the plan.
func (e *Executor) logLine(planID, actionID string, stream api.LogStream, line string) {
	seq, err := e.seqs.next(planID)
	if err == nil {
		err = e.Logs.Add(OutboxEntry{Log: &api.LogLine{PlanID: planID, ActionID: actionID, Seq: seq, Time: e.now(), Stream: stream, Line: line}})
	}
	if err != nil {
		e.Logger.Error("cannot buffer log line", "plan", planID, "err", err)
	}
}

// report queues a result, or holds it when the outbox refuses it (see
// held); the key makes a pending duplicate a no-op. The key names the plan
// as well as the action: two plans computed against the same inventory
// share action IDs, and the outcome reported for one must not swallow the
// other's. It cannot fail: what the outbox refuses is held.
func (e *Executor) report(r Record) {
	kind := "final"
	if r.Status == model.ActionRunning {
		kind = "start"
	}
	res := r.ActionResult
	entry := OutboxEntry{Key: kind + "-" + r.PlanID + "-" + r.ActionID, Result: &res}
	e.heldMu.Lock()
	first := len(e.held) == 0
	if !slices.ContainsFunc(e.held, func(h OutboxEntry) bool { return h.Key == entry.Key }) {
		e.held = append(e.held, entry)
	}
	e.heldMu.Unlock()
	// A result the outbox refuses is held, not lost: the plan goes on (its
	// outcomes are cached) and the agent queues the result once the
	// outbox takes writes again.
	if err := e.Requeue(); err != nil {
		e.Logger.Error("cannot buffer a result on disk; holding it in memory and retrying", "plan", r.PlanID, "action", r.ActionID,
			"status", r.Status, "held", e.Held(), "err", err)
		if first {
			// Wake the delivery loop: it retries until the outbox recovers.
			e.Results.signal()
		}
	}
}

// errHeld marks the error of a Requeue that left results held.
var errHeld = errors.New("results held in memory")

// Requeue moves the results the outbox refused earlier into it, oldest
// first, stopping at the first refusal. It is cheap when nothing is held.
func (e *Executor) Requeue() error {
	e.heldMu.Lock()
	defer e.heldMu.Unlock()
	for len(e.held) > 0 {
		if err := e.Results.Add(e.held[0]); err != nil {
			return fmt.Errorf("%w: queue held result %s: %w", errHeld, e.held[0].Key, err)
		}
		e.held[0] = OutboxEntry{}
		e.held = e.held[1:]
	}
	e.held = nil
	return nil
}

// Held is the number of results waiting for the outbox to take them.
func (e *Executor) Held() int {
	e.heldMu.Lock()
	defer e.heldMu.Unlock()
	return len(e.held)
}

// replay reports the cached outcome rec of action a for plan. An action ID
// names what is done, not the plan it came in: two plans computed against
// the same inventory (a plan superseded by a newer commit, a plan made
// before the last heartbeat arrived) carry the same action with the same
// ID. Such an action is not executed again; its outcome is reported for the
// plan at hand, under that plan's ID, and that plan's log says where it came
// from.
func (e *Executor) replay(plan model.Plan, a model.Action, rec Record) {
	if rec.PlanID == plan.ID {
		e.report(rec)
		return
	}
	from := rec.PlanID
	rec.PlanID = plan.ID
	out := map[string]any{}
	if len(rec.Output) > 0 {
		_ = json.Unmarshal(rec.Output, &out) // an unreadable output is replaced, not fatal
	}
	out["cachedFromPlan"] = from
	rec.Output, _ = json.Marshal(out)
	word := "done"
	if rec.Status != model.ActionSucceeded {
		word = string(rec.Status)
	}
	e.logLine(plan.ID, a.ID, api.StreamAgent, fmt.Sprintf("%s %s: %s earlier under plan %s; that outcome is reported, nothing was executed",
		a.Operation, a.VM, word, shortID(from)))
	e.report(rec)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Execute applies plan. knownVersion is the inventory version of the last
// heartbeat reply; a plan computed against an older inventory is not
// executed (unless this agent already started it). stop is asked before
// each action (see Stop); when it says a newer plan is waiting or the plan
// was cancelled, Execute returns without starting another action.
// Cancelling ctx lets the current action finish and stops before the next.
func (e *Executor) Execute(ctx context.Context, plan model.Plan, knownVersion int64, stop func() Stop) (Outcome, error) {
	if err := checkID("plan", plan.ID); err != nil {
		return "", err
	}
	for _, a := range plan.Actions {
		if err := checkID("action", a.ID); err != nil {
			return "", fmt.Errorf("plan %s: %w", plan.ID, err)
		}
	}
	log := e.Logger.With("plan", plan.ID)
	// Only a record made for this very plan means this agent started it: an
	// action shared with an earlier plan says nothing about whether this one
	// is stale.
	touched := false
	for _, a := range plan.Actions {
		if rec, ok, err := e.Cache.Get(a.ID); err != nil {
			return "", err
		} else if ok && rec.PlanID == plan.ID {
			touched = true
			break
		}
	}
	if !touched && knownVersion > plan.InventoryVersion {
		msg := fmt.Sprintf("stale plan: computed against inventory version %d, the agent has reported version %d since; not executed", plan.InventoryVersion, knownVersion)
		log.Warn("stale plan not executed", "planVersion", plan.InventoryVersion, "known", knownVersion)
		e.logLine(plan.ID, "", api.StreamAgent, msg)
		now := e.now()
		for _, a := range plan.Actions {
			r := skipped(plan.ID, a, msg, now)
			// An action shared with an earlier plan keeps that plan's record:
			// skipping it here says nothing about its real outcome.
			if _, ok, err := e.Cache.Get(a.ID); err != nil {
				return "", err
			} else if !ok {
				if err := e.Cache.Put(r); err != nil {
					return "", err
				}
			}
			e.report(r)
		}
		return OutcomeStale, nil
	}
	var failed *Record
	for i, a := range plan.Actions {
		var st Stop
		if stop != nil {
			st = stop()
		}
		if st.Cancelled != "" {
			log.Info("plan cancelled; no further action starts", "why", st.Cancelled)
			e.logLine(plan.ID, "", api.StreamAgent, st.Cancelled)
			return OutcomeCancelled, e.skipRest(plan, plan.Actions[i:], st.Cancelled)
		}
		if i > 0 && st.Newer {
			log.Info("plan superseded; stopping after the current action")
			e.logLine(plan.ID, "", api.StreamAgent, "superseded by a newer plan")
			return OutcomeSuperseded, nil
		}
		if ctx.Err() != nil {
			return OutcomeInterrupted, nil
		}
		rec, ok, err := e.Cache.Get(a.ID)
		if err != nil {
			return "", err
		}
		if ok && rec.Final() {
			// Delivered again, or shared with an earlier plan: report the
			// cached outcome, execute nothing.
			e.replay(plan, a, rec)
			if rec.Status == model.ActionFailed && failed == nil {
				failed = &rec
			}
			continue
		}
		if failed != nil {
			r := skipped(plan.ID, a, fmt.Sprintf("skipped: %s %s failed earlier in the plan", failed.Operation, failed.VM), e.now())
			if err := e.Cache.Put(r); err != nil {
				return "", err
			}
			e.report(r)
			continue
		}
		r, err := e.run(ctx, plan, a, ok)
		if err != nil {
			return "", err
		}
		if r.Status == model.ActionFailed {
			failed = &r
		}
	}
	return OutcomeDone, nil
}

// skipRest reports the actions of a cancelled plan that were not started:
// a final outcome cached for one (shared with an earlier plan, or this
// plan delivered again) is reported as it is, the rest skipped with why.
// Nothing is cached: should the plan come back (the desired state returns
// to it), or a later plan share an action, that action still runs.
func (e *Executor) skipRest(plan model.Plan, rest []model.Action, why string) error {
	now := e.now()
	for _, a := range rest {
		rec, ok, err := e.Cache.Get(a.ID)
		if err != nil {
			return err
		}
		if ok && rec.Final() {
			e.replay(plan, a, rec)
			continue
		}
		e.report(skipped(plan.ID, a, why, now))
	}
	return nil
}

// skipped is the record of action a of plan planID not executed, and why.
func skipped(planID string, a model.Action, why string, now time.Time) Record {
	return Record{Operation: a.Operation, VM: a.VM, ActionResult: model.ActionResult{PlanID: planID, ActionID: a.ID,
		Status: model.ActionSkipped, Error: why, StartedAt: now, FinishedAt: now}}
}

// run executes one action (or recovers it after a crash) and records it.
func (e *Executor) run(ctx context.Context, plan model.Plan, a model.Action, interrupted bool) (Record, error) {
	log := e.Logger.With("plan", plan.ID, "action", a.ID, "op", a.Operation, "vm", a.VM)
	started := e.now()
	if interrupted {
		prev, _, _ := e.Cache.Get(a.ID)
		started = prev.StartedAt
	}
	rec := Record{Operation: a.Operation, VM: a.VM, ActionResult: model.ActionResult{PlanID: plan.ID, ActionID: a.ID,
		Status: model.ActionRunning, StartedAt: started}}
	// Actions run to completion even when the agent is told to stop.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.actionTimeout())
	defer cancel()
	actx = WithProgress(actx, func(line string) { e.logLine(plan.ID, a.ID, api.StreamAgent, line) })
	output := map[string]any{"vm": a.VM}
	var runErr error
	if interrupted {
		done, why, err := e.alreadyDone(actx, a)
		if err != nil {
			log.Warn("cannot examine interrupted action; re-executing", "err", err)
		}
		if done {
			log.Info("interrupted action found complete", "why", why)
			Progress(actx, "recovered after restart: "+why)
			output["recovered"] = true
			return e.finish(rec, output, nil)
		}
		Progress(actx, "re-executing action interrupted by a restart")
	} else {
		if err := e.Cache.Put(rec); err != nil {
			return rec, err
		}
		e.report(rec)
	}
	Progress(actx, fmt.Sprintf("%s %s", a.Operation, a.VM))
	runErr = e.apply(actx, a)
	e.changes.Add(1)
	output["durationMs"] = time.Since(started).Milliseconds()
	if runErr != nil {
		log.Warn("action failed", "err", runErr)
		Progress(actx, "failed: "+runErr.Error())
	} else {
		Progress(actx, fmt.Sprintf("%s %s: done", a.Operation, a.VM))
	}
	return e.finish(rec, output, runErr)
}

func (e *Executor) finish(rec Record, output map[string]any, runErr error) (Record, error) {
	rec.FinishedAt = e.now()
	rec.Status = model.ActionSucceeded
	if runErr != nil {
		rec.Status = model.ActionFailed
		rec.Error = runErr.Error()
	}
	rec.Output, _ = json.Marshal(output)
	// The outcome is durable before anyone hears of it.
	if err := e.Cache.Put(rec); err != nil {
		return rec, err
	}
	e.report(rec)
	return rec, nil
}

func (e *Executor) actionTimeout() time.Duration {
	if e.ActionTimeout > 0 {
		return e.ActionTimeout
	}
	return 30 * time.Minute
}

func (e *Executor) apply(ctx context.Context, a model.Action) error {
	switch a.Operation {
	case model.OpCreate:
		if a.Spec == nil {
			return errors.New("create action without a spec")
		}
		return e.Provider.Create(ctx, a.VM, *a.Spec)
	case model.OpStart:
		return e.Provider.Start(ctx, a.VM)
	case model.OpStop:
		return e.Provider.Stop(ctx, a.VM)
	case model.OpDelete:
		return e.Provider.Delete(ctx, a.VM)
	case model.OpResize:
		if a.Spec == nil {
			return errors.New("resize action without a spec")
		}
		return e.Provider.Resize(ctx, a.VM, a.Spec.CPUs, a.Spec.MemoryMiB)
	}
	return fmt.Errorf("unknown operation %q", a.Operation)
}

// alreadyDone examines the provider's real state for an action that was
// started before a crash: create is done if the VM exists with the right
// spec hash, start if it runs, stop if it is stopped or gone, delete if it
// is gone, resize if it has the wanted size.
func (e *Executor) alreadyDone(ctx context.Context, a model.Action) (bool, string, error) {
	vms, err := e.Provider.List(ctx)
	if err != nil {
		return false, "", err
	}
	var vm *model.ObservedVM
	for i := range vms {
		if vms[i].Name == a.VM {
			vm = &vms[i]
		}
	}
	switch a.Operation {
	case model.OpCreate:
		want := a.SpecHash
		if want == "" && a.Spec != nil {
			want = a.Spec.Hash()
		}
		if vm != nil && vm.Managed && vm.SpecHash == want {
			return true, "vm exists with the planned spec", nil
		}
	case model.OpStart:
		if vm != nil && vm.State == model.VMRunning {
			return true, "vm is running", nil
		}
	case model.OpStop:
		if vm == nil || vm.State == model.VMStopped {
			return true, "vm is stopped", nil
		}
	case model.OpDelete:
		if vm == nil {
			return true, "vm is gone", nil
		}
	case model.OpResize:
		if vm != nil && a.Spec != nil && vm.CPUs == a.Spec.CPUs && vm.MemoryMiB == a.Spec.MemoryMiB {
			return true, "vm has the planned size", nil
		}
	}
	return false, "", nil
}
