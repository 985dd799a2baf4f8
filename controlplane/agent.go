package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
)

// ---- enrollment ----

func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request, c *caller) error {
	if ok, wait := s.limiters.allow(c.source); !ok {
		s.metrics.enrollments.WithLabelValues("rate_limited").Inc()
		return &httpError{status: http.StatusTooManyRequests, code: api.CodeRateLimited,
			msg: fmt.Sprintf("too many enrollment attempts from %s; retry in %s", c.source, wait.Round(time.Second)), retryAfter: wait}
	}
	var req api.EnrollRequest
	if err := decode(r, &req); err != nil {
		s.metrics.enrollments.WithLabelValues("bad_request").Inc()
		return err
	}
	resp, result, err := s.Enroll(r.Context(), req)
	s.metrics.enrollments.WithLabelValues(result).Inc()
	if err != nil {
		return err
	}
	s.log.Info("site enrolled", "tenant", resp.Tenant, "site", resp.Site, "source", c.source, "hostname", req.Hostname)
	writeJSON(w, http.StatusOK, resp)
	return nil
}

var errTokenInvalid = errorf(http.StatusUnauthorized, api.CodeTokenInvalid, "enrollment token is not valid")

// Enroll redeems a one-time token for a certificate. result is the metric
// label of the outcome. Requests that fail validation (bad CSR, wrong site)
// are refused before the token is redeemed, so they do not burn it. An
// unknown token and a wrong secret get the same answer, whatever else the
// request names, so a caller cannot probe which tokens exist or what for.
func (s *Server) Enroll(ctx context.Context, req api.EnrollRequest) (_ api.CertResponse, result string, _ error) {
	if err := checkProtocol(req.ProtocolVersion); err != nil {
		return api.CertResponse{}, "bad_request", err
	}
	id, secret, err := store.ParseEnrollmentToken(req.Token)
	if err != nil {
		return api.CertResponse{}, "invalid", errTokenInvalid
	}
	if _, err := pki.ParseCSR([]byte(req.CSR)); err != nil {
		return api.CertResponse{}, "bad_request", badRequest("field \"csr\": %v", err)
	}
	if req.Site != "" && req.Tenant == "" {
		return api.CertResponse{}, "bad_request", badRequest("field \"site\" needs field \"tenant\" as well")
	}
	// The secret is checked before anything else about the token, so a
	// caller without it learns nothing: a wrong secret gets the same 401
	// whatever tenant or site the token ID names. A caller with it who
	// names another site is refused without burning the token.
	if req.Tenant != "" {
		tok, err := s.store.CheckEnrollmentToken(ctx, id, store.HashSecret(secret), s.now())
		if err != nil {
			result, err := enrollOutcome(id, err)
			return api.CertResponse{}, result, err
		}
		if tok.Tenant != req.Tenant {
			return api.CertResponse{}, "invalid", errTokenInvalid
		}
		if req.Site != "" && tok.Site != req.Site {
			return api.CertResponse{}, "wrong_site", errorf(http.StatusForbidden, api.CodeForbidden,
				"enrollment token %s is not for site %s; create a token for that site", id, req.Site)
		}
	}
	tok, err := s.store.RedeemEnrollmentToken(ctx, id, store.HashSecret(secret), s.now())
	if err != nil {
		result, err := enrollOutcome(id, err)
		return api.CertResponse{}, result, err
	}
	ident := pki.Identity{Tenant: tok.Tenant, Site: tok.Site}
	resp, err := s.issue(ctx, store.Actor{Kind: store.ActorEnroll, ID: tok.ID}, ident, store.CertAuth{EnrollmentToken: tok.ID}, []byte(req.CSR))
	if err != nil {
		return api.CertResponse{}, "error", err
	}
	return resp, "ok", nil
}

// enrollOutcome maps a token check or redemption error to the metric
// label and the answer.
func enrollOutcome(id string, err error) (string, error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "invalid", errTokenInvalid
	case errors.Is(err, store.ErrTokenUsed):
		return "used", errorf(http.StatusUnauthorized, api.CodeTokenUsed, "enrollment token %s was already used; create a new one", id)
	case errors.Is(err, store.ErrTokenExpired):
		return "expired", errorf(http.StatusUnauthorized, api.CodeTokenExpired, "enrollment token %s expired; create a new one", id)
	}
	return "error", err
}

func checkProtocol(v int) error {
	if v > api.ProtocolVersion {
		return badRequest("agent speaks protocol %d, this control plane %d: upgrade the control plane", v, api.ProtocolVersion)
	}
	return nil
}

// issue signs a certificate for ident, records its serial and assembles the
// answer, NetBird configuration included. auth is what the request
// authenticated with (the renewing certificate, or the redeemed enrollment
// token): the store records the new certificate only if it still holds,
// atomically with any revocation, so a renewal or an enrollment racing a
// revoke never yields a working certificate; the signed one is then
// dropped unseen.
func (s *Server) issue(ctx context.Context, actor store.Actor, ident pki.Identity, auth store.CertAuth, csr []byte) (api.CertResponse, error) {
	iss, err := s.pki.Sign(csr, ident)
	if err != nil {
		return api.CertResponse{}, err
	}
	err = s.store.IssueSiteCertificate(ctx, actor, ident.Tenant, ident.Site, auth, iss.Serial, s.now())
	switch {
	case (errors.Is(err, store.ErrCertRevoked) || errors.Is(err, store.ErrCertUnknown)) && auth.Serial == "":
		return api.CertResponse{}, errorf(http.StatusUnauthorized, api.CodeCertRevoked,
			"site %s was revoked while enrolling; create a new token", ident.Site)
	case errors.Is(err, store.ErrCertRevoked), errors.Is(err, store.ErrCertUnknown):
		return api.CertResponse{}, errorf(http.StatusUnauthorized, api.CodeCertRevoked,
			"certificate %s of site %s was revoked while renewing; enroll again with a new token", auth.Serial, ident.Site)
	case errors.Is(err, store.ErrNotFound):
		return api.CertResponse{}, errorf(http.StatusUnauthorized, api.CodeCertInvalid, "site %s no longer exists", ident.Site)
	case err != nil:
		return api.CertResponse{}, fmt.Errorf("record certificate: %w", err)
	}
	mgmt, key, err := s.store.SiteNetBird(ctx, ident.Tenant, ident.Site)
	if err != nil {
		return api.CertResponse{}, fmt.Errorf("read NetBird settings: %w", err)
	}
	resp := api.CertResponse{
		Tenant:            ident.Tenant,
		Site:              ident.Site,
		Certificate:       string(iss.CertPEM),
		CA:                string(s.pki.CAPEM()),
		NotAfter:          iss.NotAfter,
		HeartbeatInterval: api.Duration(s.heartbeatInterval(ctx)),
		ProtocolVersion:   api.ProtocolVersion,
	}
	if mgmt != "" || key != "" {
		resp.NetBird = &api.NetBirdConfig{ManagementURL: mgmt, SetupKey: key.Reveal()}
	}
	return resp, nil
}

// ---- renewal ----

func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.RenewRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := checkProtocol(req.ProtocolVersion); err != nil {
		return err
	}
	if _, err := pki.ParseCSR([]byte(req.CSR)); err != nil {
		return badRequest("field \"csr\": %v", err)
	}
	resp, err := s.issue(r.Context(), c.actor(), c.id, store.CertAuth{Serial: c.serial}, []byte(req.CSR))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// ---- heartbeat ----

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.HeartbeatRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	resp, err := s.Heartbeat(r.Context(), c, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// Heartbeat records a report and tells the agent when to come back.
func (s *Server) Heartbeat(ctx context.Context, c *caller, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	if err := checkProtocol(req.ProtocolVersion); err != nil {
		return api.HeartbeatResponse{}, err
	}
	seen := make(map[string]bool, len(req.VMs))
	for i, vm := range req.VMs {
		if vm.Name == "" {
			return api.HeartbeatResponse{}, badRequest("field \"vms[%d].name\" is empty", i)
		}
		if seen[vm.Name] {
			return api.HeartbeatResponse{}, badRequest("field \"vms[%d].name\": VM %q reported twice", i, vm.Name)
		}
		seen[vm.Name] = true
	}
	// Stored in the typed form whichever form the agent sent (agents older
	// than api.FeatureTypedFacts, or any agent's first heartbeat, use labels).
	f := req.Facts.Typed()
	if f.AgentVersion == "" {
		f.AgentVersion = req.AgentVersion
	}
	facts, err := json.Marshal(f)
	if err != nil {
		return api.HeartbeatResponse{}, fmt.Errorf("encode facts: %w", err)
	}
	now := s.now()
	interval := s.heartbeatInterval(ctx)
	vms := req.VMs
	if vms == nil {
		vms = []model.ObservedVM{}
	}
	res, err := s.store.RecordHeartbeat(ctx, c.id.Tenant, c.id.Site, store.Heartbeat{Facts: facts, VMs: vms, Interval: interval, Time: now})
	if err != nil {
		return api.HeartbeatResponse{}, err
	}
	s.metrics.heartbeats.Inc()
	s.metrics.sawSite(c.id.Tenant, c.id.Site, now)
	if prev := c.site.LastHeartbeat; !prev.IsZero() {
		lag := now.Sub(prev) - c.site.HeartbeatInterval
		s.metrics.observeLag(c.id.Tenant, c.id.Site, max(0, lag.Seconds()))
	}
	if res.Changed && s.opts.Reconciler != nil {
		s.opts.Reconciler.InventoryChanged(ctx, c.id.Tenant, c.id.Site)
	}
	if s.heartbeatChangesFleet(c.site, res.Changed, f.AgentVersion, now) {
		s.wakeFleet(ctx, c.id.Tenant)
	}
	return api.HeartbeatResponse{
		NetBird:          s.pendingNetBird(ctx, c.id.Tenant, c.id.Site, res.NetBirdSetupKey),
		NextHeartbeat:    api.Duration(interval),
		InventoryVersion: res.InventoryVersion,
		ServerTime:       now.UTC(),
		RenewAfter:       c.notAfter.Add(-s.pki.ClientCertTTL() / 3).UTC().Truncate(time.Second),
		Features:         []string{api.FeatureTypedFacts},
	}, nil
}

// ---- plan long-poll ----

func (s *Server) handleAgentPlan(w http.ResponseWriter, r *http.Request, c *caller) error {
	q := r.URL.Query()
	wait := 30 * time.Second
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return badRequest("query parameter wait=%q: want a duration such as 30s", v)
		}
		wait = min(d, s.opts.MaxLongPoll)
	}
	p, err := s.waitPlan(r.Context(), c.id, q.Get("after"), wait, q.Get(api.QuerySuperseded) == "1")
	if err != nil {
		return err
	}
	if p == nil {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

// WaitPlan returns the site's active plan as soon as it differs from after,
// or nil when wait elapses (or the server shuts down) first. It subscribes
// before reading, so a plan stored in between is not missed.
func (s *Server) WaitPlan(ctx context.Context, id pki.Identity, after string, wait time.Duration) (*api.AgentPlan, error) {
	return s.waitPlan(ctx, id, after, wait, false)
}

// WatchPlan is WaitPlan that also answers, at once, with plan after itself
// when it was superseded and no plan is active (a commit cancelled it); the
// store notifies the plan topic when it does, so a waiting poll wakes.
// Only superseded counts: a plan that succeeded or failed ended by the
// agent's own reports. Only an asking agent gets this answer: an older one
// would poll again with the same after at once, for ever.
func (s *Server) WatchPlan(ctx context.Context, id pki.Identity, after string, wait time.Duration) (*api.AgentPlan, error) {
	return s.waitPlan(ctx, id, after, wait, true)
}

func (s *Server) waitPlan(ctx context.Context, id pki.Identity, after string, wait time.Duration, watch bool) (*api.AgentPlan, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, unsubscribe := s.store.Subscribe(ctx, store.PlanTopic(id.Tenant, id.Site))
	defer unsubscribe()
	s.metrics.longPolls.Inc()
	s.waiting.Add(1)
	defer func() {
		s.metrics.longPolls.Dec()
		s.waiting.Add(-1)
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	// afterSettled: after succeeded, failed or is another site's plan,
	// which no later write changes, so a wake-up need not read it again.
	afterSettled := false
	for {
		p, err := s.store.ActivePlan(ctx, id.Tenant, id.Site)
		switch {
		case err == nil && p.Plan.ID != after:
			return &api.AgentPlan{Plan: p.Plan, Status: p.Status}, nil
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return nil, err
		case err != nil && watch && after != "" && !afterSettled:
			// No active plan: say whether after was superseded. Unknown
			// or another site's plan IDs get the plain long-poll.
			old, err := s.store.GetPlan(ctx, id.Tenant, after)
			switch {
			case err == nil && old.Plan.Site == id.Site && old.Status == model.PlanSuperseded:
				return &api.AgentPlan{Plan: old.Plan, Status: old.Status, SupersededBy: old.SupersededBy,
					SupersededByCommit: old.SupersededByCommit}, nil
			case err == nil:
				afterSettled = old.Plan.Site != id.Site || old.Status == model.PlanSucceeded || old.Status == model.PlanFailed
			case !errors.Is(err, store.ErrNotFound):
				return nil, err
			}
		}
		parked(ctx)
		select {
		case <-ch:
		case <-timer.C:
			return nil, nil
		case <-s.shutdown:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ---- results ----

func (s *Server) handleResults(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.ResultsRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	resp, err := s.ReportResults(r.Context(), c, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// ReportResults records action starts and outcomes in order. Each is
// idempotent, so an agent that got an error resends the whole batch.
func (s *Server) ReportResults(ctx context.Context, c *caller, req api.ResultsRequest) (api.ResultsResponse, error) {
	if len(req.Results) == 0 {
		return api.ResultsResponse{}, badRequest("field \"results\" is empty")
	}
	for i, res := range req.Results {
		if res.PlanID == "" || res.ActionID == "" {
			return api.ResultsResponse{}, badRequest("results[%d]: planId and actionId are required", i)
		}
		switch res.Status {
		case model.ActionRunning, model.ActionSucceeded, model.ActionFailed, model.ActionSkipped:
		default:
			return api.ResultsResponse{}, badRequest("results[%d].status %q: want running, succeeded, failed or skipped", i, res.Status)
		}
		if len(res.Output) > 0 && !json.Valid(res.Output) {
			return api.ResultsResponse{}, badRequest("results[%d].output is not valid JSON", i)
		}
	}
	now := s.now()
	out := api.ResultsResponse{Results: make([]api.ResultAck, len(req.Results))}
	var finals []store.ActionResult
	var finalAt []int // finals[j] is req.Results[finalAt[j]]
	var starts []store.ActionStart
	var startAt []int // starts[j] is req.Results[startAt[j]]
	for i, res := range req.Results {
		if res.Status == model.ActionRunning {
			started := res.StartedAt
			if started.IsZero() {
				started = now
			}
			starts = append(starts, store.ActionStart{PlanID: res.PlanID, ActionID: res.ActionID, Time: started})
			startAt = append(startAt, i)
			out.Results[i] = api.ResultAck{ActionID: res.ActionID, New: true, PlanStatus: model.PlanInProgress}
			continue
		}
		final := res
		if final.FinishedAt.IsZero() {
			final.FinishedAt = now
		}
		finals = append(finals, final)
		finalAt = append(finalAt, i)
	}
	if len(starts) > 0 {
		// One transaction for the starts too; as before, every start is
		// recorded ahead of the batch's outcomes.
		if err := s.store.StartActions(ctx, c.id.Tenant, c.id.Site, starts); err != nil {
			if ctx.Err() != nil {
				return api.ResultsResponse{}, fmt.Errorf("results: %w", err)
			}
			// A refused start fails the whole batch: start them one by one
			// to keep the others and name the refused one.
			for j, st := range starts {
				if err := s.store.StartAction(ctx, c.id.Tenant, c.id.Site, st.PlanID, st.ActionID, st.Time); err != nil {
					return api.ResultsResponse{}, fmt.Errorf("results[%d]: %w", startAt[j], err)
				}
			}
		}
	}
	if len(finals) > 0 {
		// One transaction for the batch: each audited write waits its turn
		// on the audit chain's head, so a result per transaction made a
		// rollout's results queue behind each other.
		outs, err := s.store.RecordActionResults(ctx, c.actor(), c.id.Tenant, c.id.Site, finals)
		if err != nil {
			if ctx.Err() != nil {
				return api.ResultsResponse{}, fmt.Errorf("results: %w", err)
			}
			// A refused result fails the whole batch: record them one by
			// one to keep the others and name the refused one.
			outs = make([]store.ResultOutcome, len(finals))
			for j, final := range finals {
				if outs[j], err = s.store.RecordActionResult(ctx, c.actor(), c.id.Tenant, c.id.Site, final); err != nil {
					return api.ResultsResponse{}, fmt.Errorf("results[%d]: %w", finalAt[j], err)
				}
			}
		}
		for j, o := range outs {
			res := req.Results[finalAt[j]]
			if o.New {
				s.metrics.actions.WithLabelValues(string(res.Status)).Inc()
			}
			// The result that finished the plan: its last success, or its first failure.
			if o.New && (o.PlanStatus == model.PlanSucceeded || o.PlanStatus == model.PlanFailed && res.Status == model.ActionFailed) {
				s.log.Info("plan finished", "tenant", c.id.Tenant, "site", c.id.Site, "plan", res.PlanID, "status", o.PlanStatus)
			}
			out.Results[finalAt[j]] = api.ResultAck{ActionID: res.ActionID, New: o.New, PlanStatus: o.PlanStatus}
		}
	}
	s.notifyPlanStates(ctx, req.Results)
	if slices.ContainsFunc(req.Results, func(r api.ActionResult) bool { return r.Status == model.ActionRunning }) {
		s.wakeFleet(ctx, c.id.Tenant) // a plan may have started; the store signals its end
	}
	return out, nil
}

// notifyPlanStates wakes the dashboard's streams of the plans reported on,
// without waiting: the notifier writes the topics with the other pending
// wake-ups (and deduplicates them). A lost wake-up only delays a page.
func (s *Server) notifyPlanStates(ctx context.Context, results []api.ActionResult) {
	topics := make([]string, 0, len(results))
	for _, res := range results {
		topics = append(topics, planStateTopic(res.PlanID))
	}
	s.notes.notify(ctx, topics...)
}

// ---- logs ----

func (s *Server) handleAgentLogs(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.LogsRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	resp, err := s.AppendLogs(r.Context(), c, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// AppendLogs stores a batch, drops lines already stored, and reports the
// sequence numbers still missing below the batch's highest per plan (so
// the agent can resend them) instead of silently accepting a hole. Lines
// are cut to MaxLogLineBytes, and the plan's and site's log quotas apply:
// lines beyond are dropped, counted and answered (not refused, so the
// agent does not retry them), and the plan's log is reported closed.
func (s *Server) AppendLogs(ctx context.Context, c *caller, req api.LogsRequest) (api.LogsResponse, error) {
	if len(req.Lines) == 0 {
		return api.LogsResponse{}, badRequest("field \"lines\" is empty")
	}
	lines := make([]store.LogLine, 0, len(req.Lines))
	seen := map[string]map[int64]bool{}
	dups, truncated := 0, 0
	for i, l := range req.Lines {
		if l.PlanID == "" || l.Seq < 1 {
			return api.LogsResponse{}, badRequest("lines[%d]: planId is required and seq must be ≥ 1", i)
		}
		switch l.Stream {
		case api.StreamStdout, api.StreamStderr, api.StreamAgent:
		default:
			return api.LogsResponse{}, badRequest("lines[%d].stream %q: want stdout, stderr or agent", i, l.Stream)
		}
		if seen[l.PlanID] == nil {
			seen[l.PlanID] = map[int64]bool{}
		}
		if seen[l.PlanID][l.Seq] {
			dups++
			continue
		}
		seen[l.PlanID][l.Seq] = true
		t := l.Time
		if t.IsZero() {
			t = s.now()
		}
		text, cut := truncateLine(l.Line, s.opts.MaxLogLineBytes)
		if cut {
			truncated++
		}
		lines = append(lines, store.LogLine{PlanID: l.PlanID, ActionID: l.ActionID, Seq: l.Seq, Time: t, Stream: l.Stream, Line: text})
	}
	quota := store.LogQuota{PlanBytes: s.opts.LogPlanQuotaBytes, SiteBytes: s.opts.LogSiteQuotaBytes}
	res, err := s.store.AppendLogsWithin(ctx, c.id.Tenant, c.id.Site, lines, quota)
	if err != nil {
		return api.LogsResponse{}, err
	}
	resp := api.LogsResponse{Accepted: res.Inserted, Duplicates: dups + len(lines) - res.Inserted - res.Dropped, Truncated: truncated, Dropped: res.Dropped}
	plans := make([]string, 0, len(seen))
	for p := range seen {
		plans = append(plans, p)
	}
	slices.Sort(plans)
	for _, p := range plans {
		if scope, ok := res.Over[p]; ok {
			limit := quota.PlanBytes
			if scope == store.LogQuotaSite {
				limit = quota.SiteBytes
			}
			resp.Closed = append(resp.Closed, api.LogClosed{PlanID: p, Quota: string(scope), LimitBytes: limit})
			continue // a closed log's holes are never filled
		}
		var hi int64
		for seq := range seen[p] {
			hi = max(hi, seq)
		}
		gaps, err := s.logGaps(ctx, c.id.Tenant, p, hi)
		if err != nil {
			return api.LogsResponse{}, err
		}
		resp.Gaps = append(resp.Gaps, gaps...)
	}
	if res.Dropped > 0 {
		s.log.Info("agent log lines dropped: log quota reached", "tenant", c.id.Tenant, "site", c.id.Site, "dropped", res.Dropped)
	}
	return resp, nil
}

// logGapWindow is how far below a batch's highest sequence number gaps are
// looked for (older gaps were reported before).
const logGapWindow = 1000

// logGaps returns the missing sequence numbers of plan up to hi. It reads
// sequence numbers only: the cost of the check does not grow with the
// length of the lines stored.
func (s *Server) logGaps(ctx context.Context, tenant, plan string, hi int64) ([]api.LogGap, error) {
	from := max(0, hi-logGapWindow)
	seqs, err := s.store.LogSeqs(ctx, tenant, plan, from, hi)
	if err != nil {
		return nil, err
	}
	var out []api.LogGap
	next := from + 1
	for _, seq := range seqs {
		if seq > next {
			out = append(out, api.LogGap{PlanID: plan, From: next, To: seq - 1})
		}
		next = seq + 1
	}
	return out, nil
}

// truncateLine cuts line to at most limit bytes, on a UTF-8 boundary,
// ending with a marker that says how many bytes were cut.
func truncateLine(line string, limit int) (string, bool) {
	if len(line) <= limit {
		return line, false
	}
	// Room for the marker with the longest possible number.
	const markerRoom = 64
	keep := max(0, limit-markerRoom)
	for keep > 0 && !utf8.RuneStart(line[keep]) {
		keep--
	}
	return line[:keep] + fmt.Sprintf(" … [line truncated: %d bytes cut]", len(line)-keep), true
}
