package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// This file adapts the read-only dashboard (package ui) to the server:
// sign-in exchanges an API token for a browser session, and every page and
// event stream is scoped to the session's tenant by the same store reads
// the API uses. Its routes are rows of the one route table, so the
// isolation test covers them.

// planStateTopic is notified after agents report action progress, so the
// dashboard's plan streams wake; the plan topic itself is left to plan
// changes, which agents' long-polls wait on.
func planStateTopic(planID string) string { return "planstate/" + planID }

// maxFleetPlans bounds the plans read for the fleet page's last-plan column.
const maxFleetPlans = 1000

// streamKeepAlive is how often an idle event stream sends a comment, so
// proxies do not cut it.
const streamKeepAlive = 25 * time.Second

func (s *Server) dashboardRoutes() []Route {
	r := func(method, pattern string, auth AuthKind, h handlerFunc) Route {
		return Route{Method: method, Pattern: pattern, Auth: auth, handle: h}
	}
	return []Route{
		r("GET", ui.PathRoot, AuthPublic, s.handleSignInPage),
		r("GET", ui.PathAsset, AuthPublic, s.handleAsset),
		r("POST", ui.PathSignIn, AuthPublic, s.handleSignIn),
		r("POST", ui.PathSignOut, AuthSession, s.handleSignOut),
		r("GET", ui.PathSignInCode, AuthPublic, s.handleSignInCodePage),
		r("POST", ui.PathSignInCode, AuthPublic, s.handleSignInCode),
		r("POST", api.PathDashboardSignInCodes, AuthUser, s.handleCreateSignInCode),
		r("GET", ui.PathFleet, AuthSession, s.handleFleet),
		r("GET", ui.PathSite, AuthSession, s.handleSitePage),
		r("GET", ui.PathPlan, AuthSession, s.handlePlanPage),
		r("GET", ui.PathEvents, AuthSession, s.handlePlanEvents),
		r("GET", ui.PathRepos, AuthSession, s.handleReposPage),
		r("GET", ui.PathRepo, AuthSession, s.handleRepoPage),
		r("POST", ui.PathRepoReconcile, AuthSession, s.handleRepoReconcile),
		r("GET", ui.PathAudit, AuthSession, s.handleAuditPage),
		r("GET", ui.PathFleetEvents, AuthSession, s.handleFleetEvents),
	}
}

// authSession binds a request to its browser session and re-checks the
// session's API token in the store, so a deleted or expired token ends
// every session opened with it.
func (s *Server) authSession(r *http.Request, c *caller) error {
	ck, err := r.Cookie(ui.SessionCookie)
	if err != nil {
		return errorf(http.StatusUnauthorized, api.CodeUnauthorized, "not signed in, or the session ended: sign in again")
	}
	key := ui.SessionKey(ck.Value)
	sess, err := s.findSession(r.Context(), key, true)
	if err != nil {
		return err
	}
	if sess == nil {
		return errorf(http.StatusUnauthorized, api.CodeUnauthorized, "not signed in, or the session ended: sign in again")
	}
	t, err := s.store.APITokenByHash(r.Context(), sess.TokenHash, s.now())
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenExpired):
		s.endSession(r.Context(), key)
		return errorf(http.StatusUnauthorized, api.CodeUnauthorized, "the API token of this session was deleted or expired: sign in again")
	case err != nil:
		return err
	}
	c.tokenID, c.admin, c.tenant = t.ID, t.Admin, sess.Tenant
	c.session, c.sessionKey = sess, key
	return nil
}

// writeUIError answers a dashboard route's error as an HTML page.
func (s *Server) writeUIError(w http.ResponseWriter, he *httpError, c *caller) {
	p := ui.ErrorPage{Layout: ui.Layout{Title: http.StatusText(he.status)}, Status: he.status, Message: he.msg, SignIn: he.status == http.StatusUnauthorized}
	if c != nil && c.session != nil {
		p.Tenant, p.CSRF = c.tenant, c.session.CSRF
	}
	if he.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(he.retryAfter.Seconds()+0.999)))
	}
	if err := s.ui.Render(w, he.status, "error.html", p); err != nil {
		s.log.Error("render error page", "err", err)
	}
}

func (s *Server) layout(c *caller, title string) ui.Layout {
	return ui.Layout{Title: title, Tenant: c.tenant, CSRF: c.session.CSRF, Admin: c.admin}
}

func secureCookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
}

// ---- sign-in and sign-out ----

func (s *Server) handleSignInPage(w http.ResponseWriter, r *http.Request, _ *caller) error {
	ui.SecurityHeaders(w.Header())
	if ck, err := r.Cookie(ui.SessionCookie); err == nil {
		if sess, err := s.findSession(r.Context(), ui.SessionKey(ck.Value), false); err != nil {
			return err
		} else if sess != nil {
			http.Redirect(w, r, ui.PathFleet, http.StatusSeeOther)
			return nil
		}
	}
	return s.renderSignIn(w, http.StatusOK, "")
}

// renderSignIn shows the form with a fresh CSRF token, also set as a
// cookie: the POST must carry both (double submit), and SameSite=Strict
// keeps other sites from sending the cookie at all.
func (s *Server) renderSignIn(w http.ResponseWriter, status int, msg string) error {
	tok := ui.RandomToken()
	http.SetCookie(w, secureCookie(ui.SignInCookie, tok, 3600))
	return s.ui.Render(w, status, "signin.html", ui.SignInPage{Layout: ui.Layout{Title: "Sign in", CSRF: tok}, Error: msg})
}

func (s *Server) handleSignIn(w http.ResponseWriter, r *http.Request, c *caller) error {
	ui.SecurityHeaders(w.Header())
	if refused, err := s.limitSignIn(w, c); refused {
		return err
	}
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return s.renderSignIn(w, http.StatusBadRequest, "the form could not be read: "+err.Error())
	}
	ck, err := r.Cookie(ui.SignInCookie)
	form := r.PostForm.Get("csrf")
	if err != nil || form == "" || !(&ui.Session{CSRF: ck.Value}).CheckCSRF(form) {
		return s.renderSignIn(w, http.StatusForbidden, "the sign-in form expired or came from another site (field csrf): try again")
	}
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if tok == "" {
		return s.renderSignIn(w, http.StatusBadRequest, "field token is empty: paste an API token")
	}
	hash := store.HashSecret(tok)
	t, err := s.store.APITokenByHash(r.Context(), hash, s.now())
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenExpired):
		return s.renderSignIn(w, http.StatusUnauthorized, "invalid or expired API token (field token)")
	case err != nil:
		return err
	}
	tenant := strings.TrimSpace(r.PostForm.Get("tenant"))
	switch {
	case t.Admin && tenant == "":
		return s.renderSignIn(w, http.StatusBadRequest, "field tenant: an admin token must name the tenant to view")
	case t.Admin:
		if _, err := s.store.GetTenant(r.Context(), tenant); errors.Is(err, store.ErrNotFound) {
			return s.renderSignIn(w, http.StatusBadRequest, fmt.Sprintf("field tenant: no tenant %q", tenant))
		} else if err != nil {
			return err
		}
	case tenant != "" && tenant != t.Tenant:
		return s.renderSignIn(w, http.StatusForbidden, fmt.Sprintf("field tenant: this token is scoped to tenant %s", t.Tenant))
	default:
		tenant = t.Tenant
	}
	return s.startSession(w, r, c, hash, t, tenant)
}

// startSession opens a session of token t (hash tokenHash) on tenant for
// the browser, audits the sign-in and sends it to the fleet.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, c *caller, tokenHash string, t store.APIToken, tenant string) error {
	if old, err := r.Cookie(ui.SessionCookie); err == nil {
		s.endSession(r.Context(), ui.SessionKey(old.Value)) // one session per browser
	}
	key, err := s.openSession(r.Context(), tokenHash, tenant)
	if err != nil {
		return err
	}
	c.tokenID, c.admin, c.tenant = t.ID, t.Admin, tenant
	s.auditUI(r.Context(), c, "ui.signin")
	http.SetCookie(w, secureCookie(ui.SessionCookie, string(key), 0))
	http.SetCookie(w, secureCookie(ui.SignInCookie, "", -1))
	http.Redirect(w, r, ui.PathFleet, http.StatusSeeOther)
	return nil
}

func (s *Server) handleSignOut(w http.ResponseWriter, r *http.Request, c *caller) error {
	ui.SecurityHeaders(w.Header())
	if err := r.ParseForm(); err != nil {
		return badRequest("read form: %v", err)
	}
	if !c.session.CheckCSRF(r.PostForm.Get("csrf")) {
		return errorf(http.StatusForbidden, api.CodeForbidden, "the form's csrf field does not match this session: reload the page and try again")
	}
	s.endSession(r.Context(), c.sessionKey)
	s.auditUI(r.Context(), c, "ui.signout")
	http.SetCookie(w, secureCookie(ui.SessionCookie, "", -1))
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}

// auditUI records a sign-in or sign-out; a failure is logged, not fatal:
// the session itself is not a store mutation.
func (s *Server) auditUI(ctx context.Context, c *caller, action string) {
	_, err := s.store.AppendAudit(ctx, store.AuditEvent{Tenant: c.tenant, Actor: c.actor().String(), Action: action, Object: "token/" + c.tokenID})
	if err != nil {
		s.log.Warn("audit dashboard session", "action", action, "err", err)
	}
}

func (s *Server) handleAsset(w http.ResponseWriter, r *http.Request, _ *caller) error {
	if !ui.Asset(w, r.PathValue("file")) {
		return notFound("asset " + r.PathValue("file"))
	}
	return nil
}

// ---- pages ----

func (s *Server) handleFleet(w http.ResponseWriter, r *http.Request, c *caller) error {
	q, err := ui.ParseFleetQuery(r.URL.Query())
	if err != nil {
		return badRequest("%v", err)
	}
	p, err := s.FleetPage(r.Context(), c.tenant, q)
	if err != nil {
		return err
	}
	p.Layout = s.layout(c, "Fleet")
	return s.ui.Render(w, http.StatusOK, "fleet.html", p)
}

// FleetPage gathers the tenant's sites for the fleet page, filtered and
// sorted by q.
func (s *Server) FleetPage(ctx context.Context, tenant string, q ui.FleetQuery) (ui.FleetPage, error) {
	sites, err := s.store.ListSites(ctx, tenant)
	if err != nil {
		return ui.FleetPage{}, fmt.Errorf("list sites: %w", err)
	}
	return s.fleetPageOf(ctx, tenant, sites, q, s.now())
}

// fleetPageOf builds the fleet page of sites (the tenant's, as listed).
func (s *Server) fleetPageOf(ctx context.Context, tenant string, sites []store.Site, q ui.FleetQuery, now time.Time) (ui.FleetPage, error) {
	invs, err := s.store.Inventories(ctx, tenant)
	if err != nil {
		return ui.FleetPage{}, fmt.Errorf("inventories: %w", err)
	}
	plans, err := s.store.ListPlans(ctx, tenant, store.PlanFilter{Limit: maxFleetPlans})
	if err != nil {
		return ui.FleetPage{}, fmt.Errorf("list plans: %w", err)
	}
	last := map[string]*ui.PlanSummary{}
	for _, p := range plans { // newest first
		if last[p.Plan.Site] == nil {
			last[p.Plan.Site] = planSummary(p)
		}
	}
	page := ui.FleetPage{Query: q, Total: len(sites), Now: now, Rows: make([]ui.SiteRow, 0, len(sites))}
	if len(plans) == maxFleetPlans {
		page.PlanWindow = maxFleetPlans
	}
	labels, err := s.store.SiteLabels(ctx, tenant)
	if err != nil {
		return ui.FleetPage{}, err
	}
	for _, st := range sites {
		row := s.siteRow(st, invs[st.Name], now)
		row.Labels, row.LastPlan = labels[st.Name], last[st.Name]
		if row.Online {
			page.Online++
		}
		page.Rows = append(page.Rows, row)
	}
	page.Rows = q.Apply(page.Rows)
	return page, nil
}

// planSummary summarises a plan; Actions counts p.Actions, so it is
// zero unless the plans were listed WithActions.
func planSummary(p store.StoredPlan) *ui.PlanSummary {
	return &ui.PlanSummary{ID: p.Plan.ID, Status: p.Status, Commit: p.Plan.Commit, UpdatedAt: p.UpdatedAt, Actions: len(p.Actions)}
}

// siteRow summarises a site; online uses the API's rule (siteView).
// Labels are the caller's to fill (from store.SiteLabels).
func (s *Server) siteRow(st store.Site, inv model.Inventory, now time.Time) ui.SiteRow {
	row := ui.SiteRow{Name: st.Name, Enrolled: !st.EnrolledAt.IsZero(), LastSeen: st.LastHeartbeat, VMs: map[model.VMState]int{}}
	if !st.LastHeartbeat.IsZero() {
		row.Lag = max(0, now.Sub(st.LastHeartbeat))
		iv := st.HeartbeatInterval
		if iv <= 0 {
			iv = s.opts.MinHeartbeatInterval
		}
		row.Online = row.Lag <= iv+s.opts.HeartbeatGrace
	}
	if f := facts(st); f != nil {
		row.AgentVersion = f.AgentVersion
	}
	for _, vm := range inv.VMs {
		row.VMs[vm.State]++
		row.VMTotal++
	}
	return row
}

func facts(st store.Site) *api.HostFacts {
	if len(st.Facts) == 0 {
		return nil
	}
	var f api.HostFacts
	if err := json.Unmarshal(st.Facts, &f); err != nil {
		return nil
	}
	f = f.Typed()
	return &f
}

func (s *Server) handleSitePage(w http.ResponseWriter, r *http.Request, c *caller) error {
	ctx := r.Context()
	name := r.PathValue("site")
	st, err := s.store.GetSite(ctx, c.tenant, name)
	if err != nil {
		return err
	}
	now := s.now()
	inv, err := s.store.Inventory(ctx, c.tenant, name)
	if err != nil {
		return err
	}
	row := s.siteRow(st, inv, now)
	vms, err := s.SiteVMs(ctx, c.tenant, name)
	if err != nil {
		return err
	}
	switch ds, err := s.store.DesiredState(ctx, c.tenant, name); {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("desired state of %s: %w", name, err)
	case ds.Document != nil:
		row.Labels = ds.Document.Labels
	}
	plans, err := s.store.ListPlans(ctx, c.tenant, store.PlanFilter{Site: name, Limit: 50, WithActions: true})
	if err != nil {
		return err
	}
	p := ui.SitePage{Layout: s.layout(c, "Site "+name), Site: row, DesiredKnown: vms.DesiredKnown, DesiredCommit: vms.DesiredCommit, Now: now}
	if f := facts(st); f != nil {
		p.Facts = &ui.Facts{Hostname: f.Hostname, OS: f.OS, Arch: f.Arch, Kernel: f.KernelVersion, CPUModel: f.CPUModel,
			CPUs: f.CPUs, MemoryMiB: f.MemoryMiB, DiskFreeGiB: f.DiskFreeGiB, DiskTotalGiB: f.DiskTotalGiB, KVM: f.KVM}
		if f.Hypervisor.Name != "" {
			p.Facts.Hypervisor = strings.TrimSpace(f.Hypervisor.Name + " " + f.Hypervisor.Version)
		}
		if f.NetBird.Installed {
			p.Facts.NetBird = strings.TrimSpace(f.NetBird.State + " " + f.NetBird.IP)
		}
	}
	for _, v := range vms.VMs {
		vr := ui.VMRow{Name: v.Name, Desired: v.Desired, Actual: v.Actual, InSync: v.InSync}
		if v.Desired != nil && v.Actual != nil && !v.Actual.Managed {
			vr.Conflict = "an unmanaged VM holds this name"
		}
		p.VMs = append(p.VMs, vr)
	}
	for _, pl := range plans {
		p.Plans = append(p.Plans, *planSummary(pl))
		if p.Running == nil && (pl.Status == model.PlanPending || pl.Status == model.PlanInProgress) {
			p.Running = planSummary(pl)
		}
	}
	return s.ui.Render(w, http.StatusOK, "site.html", p)
}

func (s *Server) handlePlanPage(w http.ResponseWriter, r *http.Request, c *caller) error {
	p, err := s.PlanPage(r.Context(), c.tenant, r.PathValue("plan"))
	if err != nil {
		return err
	}
	p.Layout = s.layout(c, "Plan "+ui.Short(p.ID))
	lines, more, err := s.store.LogPage(r.Context(), c.tenant, p.ID, 0, ui.LogPageLines, min(ui.LogPageBytes, s.opts.MaxLogPageBytes))
	if err != nil {
		return fmt.Errorf("log of plan %s: %w", p.ID, err)
	}
	for _, l := range lines {
		p.Log = append(p.Log, logRow(l))
		p.LogAfter = l.Seq
	}
	p.LogMore = more
	if p.Live {
		p.Events += "?log=" + strconv.FormatInt(p.LogAfter, 10)
	}
	return s.ui.Render(w, http.StatusOK, "plan.html", p)
}

func logRow(l store.LogLine) ui.LogRow {
	return ui.LogRow{Seq: l.Seq, Time: l.Time, Action: l.ActionID, Stream: string(l.Stream), Line: l.Line}
}

// logAfter is where a plan stream's log starts: after the line the page
// showed last (query parameter log), or after the last line this stream
// sent before the browser reconnected (Last-Event-ID), whichever is later.
func logAfter(r *http.Request) (int64, error) {
	var after int64
	if v := r.URL.Query().Get("log"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, badRequest("query parameter log %q: want the last log sequence number shown (0 or more)", v)
		}
		after = n
	}
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > after {
			after = n
		}
	}
	return after, nil
}

// sendLogs sends the plan's log lines after seq as "log" events, a page
// (ui.LogPageLines lines, ui.LogPageBytes) per event, until none is left;
// each event's id is its last line's sequence number, so a reconnecting
// browser resumes after it. It returns the last sequence number sent.
func (s *Server) sendLogs(ctx context.Context, send func(event, id string, data []byte) error, tenant, plan string, after int64) (int64, error) {
	for {
		lines, more, err := s.store.LogPage(ctx, tenant, plan, after, ui.LogPageLines, min(ui.LogPageBytes, s.opts.MaxLogPageBytes))
		if err != nil || len(lines) == 0 {
			return after, err
		}
		ev := ui.LogEvent{Lines: make([]ui.LogRow, 0, len(lines))}
		for _, l := range lines {
			ev.Lines = append(ev.Lines, logRow(l))
			after = l.Seq
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return after, err
		}
		if err := send("log", strconv.FormatInt(after, 10), b); err != nil {
			return after, err
		}
		if !more {
			return after, nil
		}
	}
}

// PlanPage reads one of the tenant's plans with its actions in phase order.
func (s *Server) PlanPage(ctx context.Context, tenant, id string) (ui.PlanPage, error) {
	sp, err := s.store.GetPlan(ctx, tenant, id)
	if err != nil {
		return ui.PlanPage{}, err
	}
	p := ui.PlanPage{ID: sp.Plan.ID, Site: sp.Plan.Site, Commit: sp.Plan.Commit, Status: sp.Status,
		CreatedAt: sp.CreatedAt, UpdatedAt: sp.UpdatedAt, Now: s.now(),
		Live:   sp.Status == model.PlanPending || sp.Status == model.PlanInProgress,
		Events: api.Path(ui.PathEvents, sp.Plan.ID)}
	for _, a := range sp.Actions {
		p.Actions = append(p.Actions, ui.ActionRow{Index: a.Index, ID: a.Action.ID, Operation: a.Action.Operation,
			Phase: a.Action.Operation.Phase(), VM: a.Action.VM, Reason: string(a.Action.Reason), Destructive: a.Action.Destructive,
			Status: a.Status, Error: a.Error, Started: a.StartedAt, Finished: a.FinishedAt})
	}
	ui.SortActions(p.Actions)
	return p, nil
}

// handlePlanEvents streams a plan's state as Server-Sent Events: one
// "plan" event now and after every change, "log" events with the plan's
// new log lines, woken by the store's plan, plan-state and log signals (no
// timer reads the store), and "end" once the plan is finished. It stops
// with the session, the request or the server.
func (s *Server) handlePlanEvents(w http.ResponseWriter, r *http.Request, c *caller) error {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	id := r.PathValue("plan")
	sp, err := s.store.GetPlan(ctx, c.tenant, id)
	if err != nil {
		return err
	}
	after, err := logAfter(r)
	if err != nil {
		return err
	}
	if !c.session.OpenStream() {
		return &httpError{status: http.StatusTooManyRequests, code: api.CodeRateLimited, retryAfter: 5 * time.Second,
			msg: fmt.Sprintf("this session has %d event streams open already: close a tab", ui.MaxStreams)}
	}
	defer c.session.CloseStream()
	planCh, unsubPlan := s.store.Subscribe(ctx, store.PlanTopic(c.tenant, sp.Plan.Site))
	defer unsubPlan()
	stateCh, unsubState := s.store.Subscribe(ctx, planStateTopic(id))
	defer unsubState()
	logCh, unsubLog := s.store.Subscribe(ctx, store.LogTopic(id))
	defer unsubLog()
	endCh, unsubEnd := s.store.Subscribe(ctx, sessionTopic(c.sessionKey))
	defer unsubEnd()

	ui.SecurityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(event, id string, data []byte) error {
		if id != "" {
			if _, err := fmt.Fprintf(w, "id: %s\n", id); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return err
		}
		return rc.Flush()
	}
	keep := time.NewTicker(streamKeepAlive)
	defer keep.Stop()
	var last []byte
	for {
		if !s.streamSessionLive(ctx, c) {
			_ = send("end", "", []byte(`{"reason":"the session ended (signed out, or its API token was deleted or expired)"}`))
			return nil
		}
		p, err := s.PlanPage(ctx, c.tenant, id)
		if err != nil {
			return nil // headers are sent; the browser reconnects
		}
		b, err := json.Marshal(p.Event())
		if err != nil {
			return nil
		}
		if string(b) != string(last) {
			if err := send("plan", "", b); err != nil {
				return nil
			}
			last = b
		}
		if after, err = s.sendLogs(ctx, send, c.tenant, id, after); err != nil {
			return nil
		}
		if !p.Live {
			_ = send("end", "", []byte("{}"))
			return nil
		}
		if !s.waitPlanChange(ctx, w, rc, c, keep.C, endCh, planCh, stateCh, logCh) {
			if isClosed(c.session.Done()) {
				_ = send("end", "", []byte(`{"reason":"signed out"}`))
			}
			return nil
		}
	}
}

// waitPlanChange blocks until a store signal says the plan may have
// changed (true), or the stream must stop (false). Keep-alives are written
// while waiting and never cause a read of the store.
func (s *Server) waitPlanChange(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, c *caller, keep <-chan time.Time, endCh, planCh, stateCh, logCh <-chan struct{}) bool {
	return s.waitStream(ctx, w, rc, c, keep, endCh, planCh, stateCh, logCh, nil)
}

// waitStream blocks a dashboard event stream until one of the wake
// channels or deadline fires (true: re-read and send), or the stream must
// stop (false). A nil channel never fires. Keep-alives are written while
// waiting; endCh makes the caller re-check the session.
func (s *Server) waitStream(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, c *caller, keep <-chan time.Time, endCh, wake1, wake2, wake3 <-chan struct{}, deadline <-chan time.Time) bool {
	for {
		select {
		case <-endCh:
			return true
		case <-wake1:
			return true
		case <-wake2:
			return true
		case <-wake3:
			return true
		case <-deadline:
			return true
		case <-keep:
			if !s.streamSessionLive(ctx, c) {
				return true // the caller re-checks and ends the stream
			}
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return false
			}
		case <-c.session.Done():
			return false
		case <-s.shutdown:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// tokenLive reports whether the session's API token still exists and has
// not expired; a stream checks it at every wake-up and keep-alive, so
// deleting a token also ends its open streams. A store error counts as
// live (the next check decides).
func (s *Server) tokenLive(ctx context.Context, sess *ui.Session) bool {
	_, err := s.store.APITokenByHash(ctx, sess.TokenHash, s.now())
	return !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrTokenExpired)
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
