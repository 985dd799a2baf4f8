package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
)

// ControlPlane is the part of api.Client the agent uses.
type ControlPlane interface {
	Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error)
	WatchPlan(ctx context.Context, after string, wait time.Duration) (*api.AgentPlan, error)
	ReportResults(ctx context.Context, results ...api.ActionResult) (api.ResultsResponse, error)
	SendLogs(ctx context.Context, lines []api.LogLine) (api.LogsResponse, error)
}

var _ ControlPlane = (*api.Client)(nil)

// Config wires an Agent.
type Config struct {
	Client   ControlPlane
	Executor *Executor
	Facts    FactsSource
	Logger   *slog.Logger
	// AgentVersion is reported with every heartbeat.
	AgentVersion string
	// SiteRecipient, the site key's age recipient, is reported with every
	// heartbeat (Identity.SiteRecipient).
	SiteRecipient string
	// PollWait is the long-poll duration; zero means 2m. Longer polls cost
	// the control plane fewer re-armed requests; a proxy in front of it
	// must allow requests this long.
	PollWait time.Duration
	// FirstHeartbeat is the interval used until the server names one; zero means 15s.
	FirstHeartbeat time.Duration
	// NetBird, when set, joins with the setup key and management URL a
	// heartbeat answer carries (nil: such answers are ignored).
	NetBird NetBirdJoiner
	// Renew, when set, runs beside the loops (certificate renewal).
	Renew func(ctx context.Context) error
	// CheckTimeout bounds the check, before a plan's first action, that the
	// plan is still active; zero means 5s. A control plane that does not
	// answer in time does not hold the plan back.
	CheckTimeout time.Duration
	// MaxBackoff caps the wait between two failed attempts of a loop
	// (heartbeat, plan poll, delivery); zero means DefaultMaxBackoff. The
	// first wait after a failure is spread over the heartbeat interval up
	// to this cap; a Retry-After from the control plane is waited out even
	// when longer.
	MaxBackoff time.Duration
	// After is the loops' timer (nil: time.After); tests record the waits.
	After func(time.Duration) <-chan time.Time
}

// Agent runs the edge loops: heartbeat, plan long-poll, execution and
// delivery of buffered results and logs.
type Agent struct {
	cfg Config
	log *slog.Logger

	// hbMu lets one heartbeat run at a time, so replies are recorded in
	// the order the control plane answered them.
	hbMu sync.Mutex

	mu    sync.Mutex
	known int64 // inventory version of the last heartbeat reply
	// reported is the inventory the last acknowledged heartbeat carried (its
	// JSON, as the control plane hashes it) and reportedChanges the
	// executor's change count when it was listed: together they say whether
	// the control plane's inventory, and so known, is behind.
	reported        []byte
	reportedChanges int64
	acked           chan struct{} // closed and replaced at every acknowledged heartbeat
	typedFacts      bool          // the control plane accepts api.HostFacts' typed fields
	latest          *model.Plan
	// ended names the plan the control plane said ended without a newer
	// one (cancelled by a commit, or its start refused as superseded), and
	// endedWhy the reason its actions not started are skipped with.
	ended, endedWhy string
	newPlan         chan struct{}
	kickHB          chan struct{}
	kickDeliver     chan struct{}
	// firstHB is the first acked channel: closed by the first acknowledged heartbeat.
	firstHB chan struct{}
	// closedLogs names plans whose logs reached a control-plane quota.
	closedLogs closedLogs
	// nbJoined and nbFailed fingerprint the NetBird configuration last
	// joined with and last failed with (a digest: never the key).
	nbJoined, nbFailed string
	nbBusy             sync.Mutex     // held while a join runs
	nbJoins            sync.WaitGroup // the join goroutine, for Run to wait on
	// interval is the heartbeat interval in use (nanoseconds), the spread
	// of every loop's first retry.
	interval atomic.Int64
}

// New builds an agent.
func New(cfg Config) *Agent {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PollWait == 0 {
		cfg.PollWait = 2 * time.Minute
	}
	if cfg.FirstHeartbeat == 0 {
		cfg.FirstHeartbeat = 15 * time.Second
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = 5 * time.Second
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	acked := make(chan struct{})
	a := &Agent{cfg: cfg, log: cfg.Logger.With("component", "agent"),
		newPlan: make(chan struct{}, 1), kickHB: make(chan struct{}, 1), kickDeliver: make(chan struct{}, 1),
		acked: acked, firstHB: acked}
	a.interval.Store(int64(cfg.FirstHeartbeat))
	return a
}

// retryWait is how long a loop waits after a failed attempt.
func (a *Agent) retryWait(b *backoff, err error) time.Duration {
	return b.next(time.Duration(a.interval.Load()), err)
}

// jitter spreads d by ±10 %.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// Run runs until ctx ends. On cancellation the current action finishes,
// buffered results get a last, short delivery attempt, and Run returns nil.
func (a *Agent) Run(ctx context.Context) error {
	loopCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := func(name string, f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(loopCtx)
			a.log.Debug("loop stopped", "loop", name)
		}()
	}
	start("heartbeat", a.heartbeatLoop)
	start("poll", a.pollLoop)
	start("deliver", a.deliverLoop)
	if a.cfg.Renew != nil {
		start("renew", func(ctx context.Context) {
			if err := a.cfg.Renew(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("certificate renewal stopped", "err", err)
			}
		})
	}
	a.execLoop(ctx)
	cancel()
	wg.Wait()
	a.nbJoins.Wait() // a NetBird join still running ends with loopCtx
	// Last chance for what the final action produced.
	flushCtx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stop()
	if err := a.Deliver(flushCtx); err != nil {
		a.log.Warn("results still buffered at exit; they are delivered after the next start", "err", err,
			"results", a.cfg.Executor.Results.Len(), "logs", a.cfg.Executor.Logs.Len(),
			// Held results are not on disk: the cached outcomes among them
			// are replayed when the plan is delivered again.
			"held", a.cfg.Executor.Held())
	}
	return nil
}

// KnownInventoryVersion is the version from the last heartbeat reply.
func (a *Agent) KnownInventoryVersion() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.known
}

// Heartbeat sends one heartbeat with facts and inventory.
func (a *Agent) Heartbeat(ctx context.Context) (api.HeartbeatResponse, error) {
	a.hbMu.Lock()
	defer a.hbMu.Unlock()
	// Read before listing: an action applied while the heartbeat is on its
	// way may be missing from it, and must still count as unreported.
	changes := a.cfg.Executor.Changes()
	vms, err := a.cfg.Executor.Provider.List(ctx)
	if err != nil {
		// Never report a partial inventory: the planner would recreate what is missing.
		return api.HeartbeatResponse{}, fmt.Errorf("inventory: %w", err)
	}
	facts := a.cfg.Facts.Collect(ctx)
	facts.OutboxDropped = a.cfg.Executor.Results.Dropped() + a.cfg.Executor.Logs.Dropped()
	facts.AgentVersion = cmp.Or(facts.AgentVersion, a.cfg.AgentVersion)
	facts.AgeRecipient = cmp.Or(facts.AgeRecipient, a.cfg.SiteRecipient)
	a.mu.Lock()
	typed := a.typedFacts
	a.mu.Unlock()
	if !typed {
		// Until the control plane says it takes the typed fields: an older
		// one rejects fields it does not know.
		facts = facts.LegacyLabels()
	}
	resp, err := a.cfg.Client.Heartbeat(ctx, api.HeartbeatRequest{AgentVersion: a.cfg.AgentVersion, Facts: facts, VMs: vms})
	if err != nil {
		if typed && errors.Is(err, api.ErrBadRequest) {
			// A control plane rolled back to one without the typed fields.
			a.mu.Lock()
			a.typedFacts = false
			a.mu.Unlock()
		}
		return resp, err
	}
	a.mu.Lock()
	a.known = resp.InventoryVersion
	a.typedFacts = resp.Has(api.FeatureTypedFacts)
	a.reported = inventoryKey(vms)
	a.reportedChanges = changes
	close(a.acked)
	a.acked = make(chan struct{})
	a.mu.Unlock()
	return resp, nil
}

// inventoryKey is the inventory as the control plane compares it: sorted
// by name, JSON encoded, an empty set as [].
func inventoryKey(vms []model.ObservedVM) []byte {
	vms = slices.Clone(vms)
	if vms == nil {
		vms = []model.ObservedVM{}
	}
	slices.SortFunc(vms, func(x, y model.ObservedVM) int { return cmp.Compare(x.Name, y.Name) })
	b, _ := json.Marshal(vms) // plain data: cannot fail
	return b
}

// unreported says why the control plane's inventory of this site may be
// behind the provider's, or "" when it is not: an action was applied since
// the inventory of the last acknowledged heartbeat was listed, or the
// provider now lists something else (a VM changed by hand). When the
// provider cannot list, it answers "": a heartbeat could not report
// anything better, and the actions will meet the same fault.
func (a *Agent) unreported(ctx context.Context) string {
	a.mu.Lock()
	changes, reported := a.reportedChanges, a.reported
	a.mu.Unlock()
	if n := a.cfg.Executor.Changes() - changes; n != 0 {
		return fmt.Sprintf("%d action(s) applied since the last heartbeat", n)
	}
	vms, err := a.cfg.Executor.Provider.List(ctx)
	if err != nil {
		a.log.Warn("cannot list the inventory to compare it with the last heartbeat", "err", err)
		return ""
	}
	if string(inventoryKey(vms)) != string(reported) {
		return "the inventory differs from the last heartbeat"
	}
	return ""
}

// freshVersion returns an inventory version that covers everything this
// host has done and shows: the one of the last heartbeat reply when
// nothing changed since (no request at all), else that of a heartbeat sent
// now. While heartbeats fail it waits for one to succeed: a plan is judged
// against the inventory the control plane has, never against a guess. It
// returns an error only when ctx ends.
func (a *Agent) freshVersion(ctx context.Context) (int64, error) {
	warned := false
	for {
		why := a.unreported(ctx)
		if why == "" {
			return a.KnownInventoryVersion(), nil
		}
		a.mu.Lock()
		acked := a.acked
		a.mu.Unlock()
		a.log.Debug("reporting the inventory before judging a plan", "why", why)
		resp, err := a.Heartbeat(ctx)
		if err == nil {
			return resp.InventoryVersion, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if !warned {
			a.log.Warn("cannot report the changed inventory; the plan waits for a heartbeat to succeed", "why", why, "err", err)
			warned = true
		}
		kick(a.kickHB)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-acked:
		}
	}
}

func (a *Agent) heartbeatLoop(ctx context.Context) {
	interval := a.cfg.FirstHeartbeat
	retry := backoff{max: a.cfg.MaxBackoff}
	failing := false
	for {
		resp, err := a.Heartbeat(ctx)
		wait := jitter(interval)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			wait = a.retryWait(&retry, err)
			if !failing {
				a.log.Warn("heartbeat failed; retrying", "err", err, "in", wait)
			}
			failing = true
		default:
			if failing {
				a.log.Info("heartbeat recovered")
			}
			failing = false
			retry.reset()
			if resp.NetBird != nil {
				a.joinNetBird(ctx, *resp.NetBird)
			}
			// The control plane answers: retry buffered reports now rather
			// than at the end of the delivery backoff.
			if a.cfg.Executor.Results.Len()+a.cfg.Executor.Logs.Len()+a.cfg.Executor.Held() > 0 {
				kick(a.kickDeliver)
			}
			if d := resp.NextHeartbeat.D(); d > 0 {
				interval = d
				a.interval.Store(int64(d))
				wait = jitter(d)
			}
		}
		if api.RetryAfter(err) > 0 {
			// The control plane asked for quiet: a kick does not cut it short.
			select {
			case <-ctx.Done():
				return
			case <-a.cfg.After(wait):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-a.kickHB:
		case <-a.cfg.After(wait):
		}
	}
}

// kick wakes whoever waits on ch, without blocking: a wake-up already
// pending covers this one.
func kick(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// pollLoop long-polls for plans. It asks about the plan it holds with
// WatchPlan, so a plan cancelled without a newer one (the control plane
// answers with the plan itself, superseded) is heard of at once, while it
// is executing. Once told, it polls with after "": the same question would
// get the same answer at once, and a plan made active again must arrive.
func (a *Agent) pollLoop(ctx context.Context) {
	after := ""
	retry := backoff{max: a.cfg.MaxBackoff}
	for ctx.Err() == nil {
		p, err := a.cfg.Client.WatchPlan(ctx, after, a.cfg.PollWait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait := a.retryWait(&retry, err)
			a.log.Debug("plan poll failed", "err", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				return
			case <-a.cfg.After(wait):
			}
			continue
		}
		retry.reset()
		if p == nil {
			continue
		}
		if p.Plan.ID == after && p.Status == model.PlanSuperseded {
			a.planEnded(p.Plan.ID, cancelReason(p))
			after = ""
			continue
		}
		after = p.Plan.ID
		if p.Status != model.PlanPending && p.Status != model.PlanInProgress && p.Status != "" {
			a.log.Debug("ignoring plan that is no longer active", "plan", p.Plan.ID, "status", p.Status)
			continue
		}
		plan := p.Plan
		a.mu.Lock()
		a.latest = &plan
		if a.ended == plan.ID {
			a.ended, a.endedWhy = "", "" // active again
		}
		a.mu.Unlock()
		kick(a.newPlan)
	}
}

// cancelReason is the skip reason for the actions of a superseded plan
// that were not started.
func cancelReason(p *api.AgentPlan) string {
	switch {
	case p.SupersededBy != "":
		return "superseded by plan " + shortID(p.SupersededBy) + "; not executed"
	case p.SupersededByCommit != "":
		return "superseded: commit " + shortID(p.SupersededByCommit) + " cancelled the plan; not executed"
	}
	return "superseded: the control plane cancelled the plan; not executed"
}

// planEnded records that plan id ended without a newer one; the executor
// starts none of its remaining actions.
func (a *Agent) planEnded(id, why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ended != id {
		a.log.Info("plan cancelled by the control plane", "plan", id, "why", why)
	}
	a.ended, a.endedWhy = id, why
}

// checkPlan asks the control plane, once and synchronously before a plan's
// first action, whether plan id is still active: a plan cancelled while
// the agent was reporting its inventory must not start at all. It returns
// a newer plan when one is active. An unreachable or slow control plane
// does not hold the plan back (CheckTimeout): the edge keeps working
// offline, and later actions are checked against the long-poll's signal
// and the start reports the control plane refuses.
func (a *Agent) checkPlan(ctx context.Context, id string) *model.Plan {
	cctx, cancel := context.WithTimeout(ctx, a.cfg.CheckTimeout)
	defer cancel()
	p, err := a.cfg.Client.WatchPlan(cctx, id, 0)
	switch {
	case err != nil:
		a.log.Debug("cannot check the plan before executing it; executing", "plan", id, "err", err)
		return nil
	case p == nil:
		return nil
	case p.Plan.ID == id && p.Status == model.PlanSuperseded:
		a.planEnded(id, cancelReason(p))
		return nil
	case p.Plan.ID != id && (p.Status == model.PlanPending || p.Status == model.PlanInProgress):
		return &p.Plan
	}
	return nil
}

func (a *Agent) execLoop(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-a.firstHB: // the stale-plan guard needs a known inventory version
	}
	done := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.newPlan:
		}
		a.mu.Lock()
		plan := a.latest
		a.mu.Unlock()
		if plan == nil || plan.ID == done {
			continue
		}
		// The stale-plan guard is only as good as the version it compares
		// with: the control plane's version moves when a heartbeat arrives,
		// so a plan made between this host changing and it reporting the
		// change carries the old version and would pass. Report first.
		known, err := a.freshVersion(ctx)
		if err != nil {
			return
		}
		a.mu.Lock()
		plan = a.latest // a newer one may have come meanwhile
		a.mu.Unlock()
		if plan.ID == done {
			continue
		}
		if newer := a.checkPlan(ctx, plan.ID); newer != nil {
			a.mu.Lock()
			if a.latest != nil && a.latest.ID == plan.ID {
				a.latest = newer
			}
			a.mu.Unlock()
			kick(a.newPlan)
			continue
		}
		a.log.Info("executing plan", "plan", plan.ID, "actions", len(plan.Actions), "commit", plan.Commit)
		outcome, err := a.cfg.Executor.Execute(ctx, *plan, known, func() Stop {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.latest != nil && a.latest.ID != plan.ID {
				return Stop{Newer: true}
			}
			if a.ended == plan.ID {
				return Stop{Cancelled: a.endedWhy}
			}
			return Stop{}
		})
		if err != nil {
			a.log.Error("plan execution stopped", "plan", plan.ID, "err", err)
		} else {
			a.log.Info("plan finished", "plan", plan.ID, "outcome", outcome)
		}
		if outcome != OutcomeInterrupted {
			done = plan.ID
		}
		// Report what the plan changed at once, not a heartbeat interval
		// later: the control plane plans the next commit from this inventory.
		if why := a.unreported(ctx); why != "" {
			if _, err := a.Heartbeat(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("cannot report the inventory after the plan", "err", err)
				kick(a.kickHB)
			}
		}
		a.mu.Lock()
		if a.latest != nil && a.latest.ID != done {
			kick(a.newPlan)
		}
		a.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
	}
}

// heldRetry is how often results held in memory are offered to the outbox again.
const heldRetry = time.Second

func (a *Agent) deliverLoop(ctx context.Context) {
	retry := backoff{max: a.cfg.MaxBackoff}
	failing, holding := false, false
	for {
		err := a.Deliver(ctx)
		held := errors.Is(err, errHeld)
		wait := time.Hour
		if err != nil && !held {
			if ctx.Err() != nil {
				return
			}
			if !failing {
				a.log.Warn("control plane unreachable; buffering results and logs on disk", "err", err)
			}
			failing = true
			wait = a.retryWait(&retry, err)
		} else {
			// The control plane took everything queued.
			if failing {
				a.log.Info("buffered results and logs delivered")
			}
			failing = false
			retry.reset()
		}
		switch {
		case held:
			// The local outbox refuses writes. Retry it at a steady pace:
			// it costs no request, and the results must not wait for a
			// backoff.
			if !holding {
				a.log.Error("results held in memory: the outbox refuses writes; retrying", "held", a.cfg.Executor.Held(), "err", err)
			}
			holding = true
			wait = heldRetry
		case err == nil && holding:
			a.log.Info("held results queued")
			holding = false
		}
		select {
		case <-ctx.Done():
			return
		case <-a.cfg.Executor.Results.Wake():
		case <-a.cfg.Executor.Logs.Wake():
		case <-a.kickDeliver:
		case <-a.cfg.After(wait):
		}
	}
}

// permanent reports whether the control plane refused a report for good
// (the plan is superseded or unknown, the body is invalid): retrying cannot help.
func permanent(err error) bool {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Status {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// Deliver sends everything buffered, results first, oldest first. It
// returns the first transient error; refused entries are dropped and logged.
func (a *Agent) Deliver(ctx context.Context) error {
	ex := a.cfg.Executor
	// Results the outbox refused before are queued first. They are newer
	// than everything already queued, so what the outbox holds is sent
	// even while they still cannot be queued; the error makes the
	// delivery loop retry with backoff.
	held := ex.Requeue()
	if err := a.deliverQueued(ctx); err != nil {
		return err
	}
	return held
}

func (a *Agent) deliverQueued(ctx context.Context) error {
	ex := a.cfg.Executor
	for batchSize := 100; ; {
		batch, err := ex.Results.Peek(batchSize)
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			break
		}
		// An action's start is moot once its outcome travels in the same batch.
		type planAction struct{ plan, action string }
		final := map[planAction]bool{}
		for _, e := range batch {
			if e.Result.Status != model.ActionRunning {
				final[planAction{e.Result.PlanID, e.Result.ActionID}] = true
			}
		}
		results := make([]api.ActionResult, 0, len(batch))
		for _, e := range batch {
			if e.Result.Status != model.ActionRunning || !final[planAction{e.Result.PlanID, e.Result.ActionID}] {
				results = append(results, *e.Result)
			}
		}
		if _, err := a.cfg.Client.ReportResults(ctx, results...); err != nil {
			if !permanent(err) {
				return fmt.Errorf("report results: %w", err)
			}
			if len(batch) > 1 {
				batchSize = 1 // find the refused one
				continue
			}
			switch {
			case results[0].Status == model.ActionRunning && errors.Is(err, api.ErrConflict):
				// The action finished meanwhile (a resend after a lost answer).
				a.log.Debug("start of a finished action not recorded", "action", results[0].ActionID)
			case results[0].Status == model.ActionRunning && errors.Is(err, api.ErrSuperseded):
				// The control plane will not start the plan's actions: start
				// no further one (the one reported has begun; it finishes).
				a.planEnded(results[0].PlanID, "superseded: the control plane refused to start the plan's actions; not executed")
			default:
				a.log.Warn("control plane refused a result; dropping it", "plan", results[0].PlanID, "action", results[0].ActionID, "status", results[0].Status, "err", err)
			}
		}
		if err := ex.Results.Remove(batch...); err != nil {
			return err
		}
	}
	for batchSize := 500; ; {
		batch, err := ex.Logs.Peek(batchSize)
		if err != nil || len(batch) == 0 {
			return err
		}
		// Lines of a plan whose log the control plane closed would only
		// be dropped there: drop them here, unsent.
		lines := make([]api.LogLine, 0, len(batch))
		for _, e := range batch {
			if !a.closedLogs.has(e.Log.PlanID) {
				lines = append(lines, *e.Log)
			}
		}
		if len(lines) > 0 {
			resp, err := a.cfg.Client.SendLogs(ctx, lines)
			if err != nil {
				if !permanent(err) {
					return fmt.Errorf("send logs: %w", err)
				}
				if len(batch) > 1 {
					batchSize = 1
					continue
				}
				a.log.Warn("control plane refused a log line; dropping it", "plan", lines[0].PlanID, "seq", lines[0].Seq, "err", err)
			}
			for _, c := range resp.Closed {
				if a.closedLogs.add(c.PlanID) {
					a.log.Warn("control plane log quota reached: this plan's later log lines are dropped, not sent",
						"plan", c.PlanID, "quota", c.Quota, "limit_bytes", c.LimitBytes)
				}
			}
		}
		if err := ex.Logs.Remove(batch...); err != nil {
			return err
		}
	}
}

// closedLogs remembers the plans whose logs the control plane closed at a
// log quota. It keeps the newest maxClosedLogs: a plan forgotten costs one
// more batch, answered as dropped, before it is remembered again.
type closedLogs struct {
	mu    sync.Mutex
	set   map[string]bool
	order []string
}

const maxClosedLogs = 256

func (c *closedLogs) has(plan string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.set[plan]
}

// add records plan and reports whether it was new.
func (c *closedLogs) add(plan string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.set[plan] {
		return false
	}
	if c.set == nil {
		c.set = map[string]bool{}
	}
	if len(c.order) == maxClosedLogs {
		delete(c.set, c.order[0])
		c.order = c.order[1:]
	}
	c.set[plan] = true
	c.order = append(c.order, plan)
	return true
}
