package demo

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/agent/netbird"
	"github.com/nkudo/nkudo/agent/providers/cloudhypervisor"
	"github.com/nkudo/nkudo/agent/providers/qemu"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/backend"
)

// bootstrap creates the dev CA, the tenant and its API token directly on
// the store, as `nkudo admin` does, before the server starts.
func (d *demo) bootstrap(ctx context.Context) error {
	if err := os.MkdirAll(d.cpDir, 0o700); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	auth, err := pki.Load(pki.Config{DevDir: filepath.Join(d.cpDir, "pki")}, d.log)
	if err != nil {
		return fmt.Errorf("demo: dev PKI: %w", err)
	}
	d.pool = auth.Pool()
	d.caFile = filepath.Join(d.dir, "ca.pem")
	if err := os.WriteFile(d.caFile, auth.CAPEM(), 0o644); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	// The audit key where `nkudo serve` looks for it in dev mode, so the
	// demo's first events are keyed too.
	key, err := pki.LoadAuditKey(filepath.Join(d.cpDir, "pki", pki.AuditKeyFile), true)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	st, err := backend.OpenWith(ctx, "", d.cpDir, backend.OpenOptions{Logger: d.log, AuditKey: store.AuditKey(key.Key), AuditKeyFresh: key.Fresh})
	if err != nil {
		return fmt.Errorf("demo: open store: %w", err)
	}
	if err := key.Commit(); err != nil {
		st.Close()
		return fmt.Errorf("demo: %w", err)
	}
	actor := store.Actor{Kind: store.ActorAdmin, ID: "local:demo"}
	_, err = st.CreateTenant(ctx, actor, store.Tenant{ID: tenantID, Name: "n-kudo demo"})
	if err == nil {
		var tok api.CreateTokenResponse
		tok, err = controlplane.CreateAPIToken(ctx, st, actor, api.CreateTokenRequest{Tenant: tenantID, Name: "demo"}, d.o.Now())
		d.token = tok.Token
	}
	if cerr := st.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("demo: create tenant %s: %w", tenantID, err)
	}
	d.n.emit(Event{Step: StepTenant, Message: fmt.Sprintf("tenant %q and an API token for it (SQLite store and dev CA in %s)", tenantID, d.cpDir),
		Data: map[string]any{"tenant": tenantID, "caFingerprint": auth.Fingerprint()}})
	return nil
}

// startServer runs the control plane in the background and waits until it
// answers /readyz.
func (d *demo) startServer(ctx context.Context, background func(string, func(context.Context) error)) error {
	addr := d.o.Listen
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("demo: listen %s: %w", addr, err)
	}
	d.url = "https://" + ln.Addr().String()
	background("control plane", func(ctx context.Context) error {
		return d.o.Serve(ctx, ln, d.cpDir, d.log.With("component", "controlplane"))
	})
	d.client, err = api.NewClient(api.ClientConfig{BaseURL: d.url, Token: d.token, RootCAs: d.pool, UserAgent: "nkudo-demo"})
	if err != nil {
		return err
	}
	err = poll(ctx, 30*time.Second, func(ctx context.Context) error { return d.client.Health(ctx, true) })
	if err != nil {
		return fmt.Errorf("control plane at %s did not become ready: %w", d.url, err)
	}
	d.n.emit(Event{Step: StepServer, Message: "control plane listening on " + d.url,
		Data: map[string]any{"url": d.url}})
	return nil
}

// startAgents registers every site, enrolls one in-process agent per site
// with a one-time token and waits for each agent's first heartbeat.
func (d *demo) startAgents(ctx context.Context, hv string, background func(string, func(context.Context) error)) error {
	for _, site := range d.sites {
		if _, err := d.client.CreateSite(ctx, site); err != nil && !errors.Is(err, api.ErrConflict) {
			return fmt.Errorf("register site %s: %w", site, err)
		}
		tok, err := d.client.CreateEnrollmentToken(ctx, site, 10*time.Minute)
		if err != nil {
			return fmt.Errorf("enrollment token for %s: %w", site, err)
		}
		siteDir := filepath.Join(d.dir, "s", site) // short: VMM socket paths must fit 107 bytes
		log := d.log.With("site", site)
		id, err := agent.Enroll(ctx, agent.EnrollOptions{ControlPlane: d.url, Token: tok.Token, CAHash: tok.CAFingerprint,
			PKIDir: filepath.Join(siteDir, "pki"), Hostname: "demo-" + site}, log)
		if err != nil {
			return fmt.Errorf("enroll %s: %w", site, err)
		}
		client, err := api.NewClient(api.ClientConfig{BaseURL: d.url, RootCAs: id.RootCAs(), Certificate: id.Certificate,
			UserAgent: "nkudo-edge/demo"})
		if err != nil {
			return err
		}
		var prov interface {
			agent.Provider
			agent.Hypervisor
		}
		if d.o.Provider == ProviderQEMU {
			prov, err = qemu.New(qemu.Options{StateDir: filepath.Join(siteDir, "qemu"), Binary: hv, Accel: d.o.Accel,
				Logger: log, DisableNetworking: true, StopTimeout: 30 * time.Second})
		} else {
			prov, err = cloudhypervisor.New(cloudhypervisor.Options{StateDir: filepath.Join(siteDir, "hv"), Binary: hv,
				Logger: log, DisableNetworking: true, StopTimeout: 10 * time.Second})
		}
		if err != nil {
			return err
		}
		ex, err := agent.NewExecutor(filepath.Join(siteDir, "agent"), prov, log)
		if err != nil {
			return err
		}
		a := agent.New(agent.Config{
			Client: client, Executor: ex, Logger: log, AgentVersion: "demo", PollWait: 20 * time.Second,
			FirstHeartbeat: time.Second,
			Facts: agent.FactsSource{StateDir: siteDir, Hypervisor: prov, AgentVersion: "demo",
				NetBird: &netbird.Client{Binary: "netbird", Logger: log}},
			Renew: func(ctx context.Context) error { return id.RenewLoop(ctx, client, log) },
		})
		background("agent "+site, func(ctx context.Context) error {
			defer client.CloseIdleConnections()
			return a.Run(ctx)
		})
		d.n.emit(Event{Step: StepEnroll, Site: site,
			Message: fmt.Sprintf("site %-16s enrolled with a one-time token (CA pinned to %s…), agent running", site, tok.CAFingerprint[:19]),
			Data:    map[string]any{"site": site}})
	}
	for _, site := range d.sites {
		err := poll(ctx, 30*time.Second, func(ctx context.Context) error {
			s, err := d.client.GetSite(ctx, site)
			if err != nil {
				return err
			}
			if s.LastHeartbeat.IsZero() {
				return fmt.Errorf("site %s has not heartbeated yet", site)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("agent of %s: %w", site, err)
		}
	}
	d.n.say(StepEnroll, "every agent has reported its host facts and (empty) VM inventory")
	return nil
}

// firstCommit registers the repository and reconciles its first commit.
func (d *demo) firstCommit(ctx context.Context) error {
	var b [16]byte
	_, _ = rand.Read(b[:])
	d.secret = hex.EncodeToString(b[:])
	r, err := d.client.CreateRepo(ctx, api.CreateRepoRequest{Name: repoName, URL: d.httpURL + "/git/" + repoName + ".git",
		Branch: "main", WebhookSecret: d.secret})
	if err != nil {
		return fmt.Errorf("register repository: %w", err)
	}
	d.repoID = r.ID
	if _, err := d.client.Reconcile(ctx, r.ID, ""); err != nil {
		return fmt.Errorf("reconcile %s: %w", r.ID, err)
	}
	d.n.emit(Event{Step: StepCommit, Commit: d.first,
		Message: fmt.Sprintf("registered the repository (%s, branch main) and asked for a reconcile of %s", r.URL, short(d.first)),
		Data:    map[string]any{"repo": r.ID}})
	return d.watch(ctx, d.first)
}

// secondCommit makes the change, announces it like a forge would (a
// signed push webhook) and watches it converge.
func (d *demo) secondCommit(ctx context.Context) error {
	c, err := makeChange(d.workDir, d.desired)
	if err != nil {
		return err
	}
	sha, err := d.repo.commit(c.Message, d.o.Now())
	if err != nil {
		return err
	}
	d.second = sha
	detail := fmt.Sprintf("M %s: %s cpus %d -> %d, memoryMiB %d -> %d (within its maxCpus/maxMemoryMiB: a resize in place)\nA %s: a new VM %s",
		d.fileOf(c.Resized, c.Site), c.Resized, c.FromCPUs, c.ToCPUs, c.FromMiB, c.ToMiB, c.AddedFile, c.Added)
	d.n.emit(Event{Step: StepCommit, Commit: sha, Message: fmt.Sprintf("commit %s %q", short(sha), c.Message), Detail: detail,
		Data: map[string]any{"site": c.Site, "resized": c.Resized, "added": c.Added}})
	status, err := d.deliverPush(ctx, d.first, sha)
	switch {
	case err == nil && status/100 == 2:
		d.n.say(StepCommit, "signed push webhook delivered to %s/v1/webhooks/%s (HTTP %d)", d.url, d.repoID, status)
	default:
		d.log.Warn("webhook delivery failed; triggering a reconcile instead", "status", status, "err", err)
		if _, err := d.client.Reconcile(ctx, d.repoID, ""); err != nil {
			return fmt.Errorf("reconcile %s: %w", d.repoID, err)
		}
		d.n.say(StepCommit, "asked for a reconcile (the webhook answered HTTP %d)", status)
	}
	return d.watch(ctx, sha)
}

func (d *demo) fileOf(vm, site string) string {
	for _, v := range d.desired.VMs {
		if v.Name == vm && v.Site == site {
			return v.Source.File
		}
	}
	return vm
}

// deliverPush posts a GitHub-style push event signed with the repository's secret.
func (d *demo) deliverPush(ctx context.Context, before, after string) (int, error) {
	body, err := json.Marshal(map[string]any{"ref": "refs/heads/main", "before": before, "after": after,
		"repository": map[string]any{"default_branch": "main"}})
	if err != nil {
		return 0, err
	}
	mac := hmac.New(sha256.New, []byte(d.secret))
	mac.Write(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url+api.Path(api.PathWebhook, d.repoID), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "demo-"+after[:12])
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: d.pool, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// Status contexts the reconciler posts.
const (
	ctxValidate = "nkudo/validate"
	ctxPlan     = "nkudo/plan"
	ctxApply    = "nkudo/apply"
)

// watch narrates one commit until nkudo/apply succeeds (nil) or fails.
func (d *demo) watch(ctx context.Context, sha string) error {
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	seenStatus := map[string]string{}
	seenAction := map[string]model.ActionStatus{}
	shownPlans := map[string]bool{}
	finalPlans := map[string]bool{}
	var last []api.CommitStatus
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		statuses, err := d.client.CommitStatuses(ctx, d.repoID, sha)
		if err != nil && !errors.Is(err, api.ErrNotFound) && ctx.Err() == nil {
			return fmt.Errorf("commit statuses of %s: %w", short(sha), err)
		}
		if err == nil {
			last = statuses
		}
		byCtx := map[string]api.CommitStatus{}
		for _, s := range statuses {
			byCtx[s.Context] = s
		}
		tell := func(c string) {
			s, ok := byCtx[c]
			key := s.State + "\x00" + s.Description
			if !ok || seenStatus[c] == key {
				return
			}
			seenStatus[c] = key
			d.n.emit(Event{Step: StepStatus, Commit: sha, Message: fmt.Sprintf("%-15s %-8s %s", s.Context, s.State, s.Description),
				Data: map[string]any{"context": s.Context, "state": s.State, "description": s.Description}})
		}
		tell(ctxValidate)
		tell(ctxPlan)
		if v, ok := byCtx[ctxValidate]; ok && isFailure(v.State) {
			return fmt.Errorf("commit %s failed validation: %s", short(sha), v.Description)
		}
		if p, ok := byCtx[ctxPlan]; ok && p.State != "pending" {
			if isFailure(p.State) {
				return fmt.Errorf("commit %s could not be planned: %s", short(sha), p.Description)
			}
			// Actions are read after the statuses, so an apply success
			// below is never told before the actions that led to it.
			if err := d.showPlans(ctx, sha, shownPlans, finalPlans, seenAction); err != nil && ctx.Err() == nil {
				return err
			}
		}
		tell(ctxApply)
		if a, ok := byCtx[ctxApply]; ok {
			switch {
			case a.State == "success":
				if err := d.waitInSync(ctx, sha); err != nil {
					return err
				}
				d.n.emit(Event{Step: StepConverged, Commit: sha,
					Message: fmt.Sprintf("every site converged on %s (%s)", short(sha), a.Description),
					Data:    map[string]any{"sites": d.sites}})
				return nil
			case isFailure(a.State):
				return fmt.Errorf("commit %s did not apply: %s", short(sha), a.Description)
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("commit %s did not converge within %s; last statuses: %s (logs: %s)",
					short(sha), d.o.Timeout, describeStatuses(last), filepath.Join(d.dir, "logs"))
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// waitInSync waits until every site's reported inventory matches the
// commit's desired state. nkudo/apply succeeds when the plans did; the
// agents report the resulting inventory with their next heartbeat, and the
// next commit must be planned against that, not against a report sent
// halfway through the previous plan.
func (d *demo) waitInSync(ctx context.Context, sha string) error {
	for _, site := range d.sites {
		var last string
		err := poll(ctx, d.o.Timeout, func(ctx context.Context) error {
			v, err := d.client.SiteVMs(ctx, site)
			if err != nil {
				return err
			}
			if !v.DesiredKnown {
				return nil // no desired view: nothing more to confirm
			}
			var out []string
			for _, vm := range v.VMs {
				if !vm.InSync {
					out = append(out, vm.Name)
				}
			}
			if len(out) > 0 {
				last = fmt.Sprintf("desired commit %s, out of sync: %s", short(v.DesiredCommit), strings.Join(out, ", "))
				return errors.New(last)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("site %s did not report the state of %s: %s", site, short(sha), last)
		}
	}
	return nil
}

func isFailure(state string) bool { return state == "failure" || state == "error" }

func describeStatuses(ss []api.CommitStatus) string {
	if len(ss) == 0 {
		return "none"
	}
	var parts []string
	for _, s := range ss {
		parts = append(parts, fmt.Sprintf("%s=%s (%s)", s.Context, s.State, s.Description))
	}
	return strings.Join(parts, ", ")
}

// showPlans renders the commit's plans the first time they are seen and
// tells every action's state change.
func (d *demo) showPlans(ctx context.Context, sha string, shown, final map[string]bool, seen map[string]model.ActionStatus) error {
	plans, err := d.client.ListPlans(ctx, api.PlanFilter{Commit: sha, RepoID: d.repoID})
	if err != nil {
		return fmt.Errorf("plans of %s: %w", short(sha), err)
	}
	// A plan seen for the first time is needed by both loops below: fetch
	// each plan at most once per call.
	fetched := map[string]api.Plan{}
	getPlan := func(id string) (api.Plan, error) {
		if full, ok := fetched[id]; ok {
			return full, nil
		}
		full, err := d.client.GetPlan(ctx, id)
		if err != nil {
			return api.Plan{}, fmt.Errorf("plan %s: %w", short(id), err)
		}
		fetched[id] = full
		return full, nil
	}
	var fresh diff.Result
	for _, p := range plans {
		if shown[p.Plan.ID] {
			continue
		}
		full, err := getPlan(p.Plan.ID)
		if err != nil {
			return err
		}
		shown[p.Plan.ID] = true
		mp := full.Plan
		if len(mp.Actions) == 0 {
			for _, a := range full.Actions {
				mp.Actions = append(mp.Actions, a.Action)
			}
		}
		fresh.Sites = append(fresh.Sites, diff.SiteResult{Site: mp.Site, Plan: mp})
	}
	if len(fresh.Sites) > 0 {
		sort.Slice(fresh.Sites, func(i, j int) bool { return fresh.Sites[i].Site < fresh.Sites[j].Site })
		var b strings.Builder
		if err := diff.RenderText(&b, fresh, diff.RenderOptions{}); err != nil {
			return err
		}
		ids := make([]string, 0, len(fresh.Sites))
		for _, s := range fresh.Sites {
			ids = append(ids, s.Plan.ID)
			d.lastPlan = s.Plan.ID
		}
		d.n.emit(Event{Step: StepPlan, Commit: sha, Message: "plan: " + diff.Summary(fresh), Detail: b.String(),
			Data: map[string]any{"plans": ids}})
	}
	for _, p := range plans {
		if final[p.Plan.ID] {
			continue
		}
		full, err := getPlan(p.Plan.ID)
		if err != nil {
			return err
		}
		for _, a := range full.Actions {
			key := p.Plan.ID + "/" + a.Action.ID
			if seen[key] == a.Status || a.Status == model.ActionPending {
				continue
			}
			seen[key] = a.Status
			msg := fmt.Sprintf("%-7s %-16s %s", a.Action.Operation, a.Action.VM, a.Status)
			if a.Error != "" {
				msg += ": " + a.Error
			}
			d.n.emit(Event{Step: StepAction, Site: p.Plan.Site, Commit: sha, Message: msg,
				Data: map[string]any{"plan": p.Plan.ID, "action": a.Action.ID, "operation": a.Action.Operation, "vm": a.Action.VM, "status": a.Status}})
		}
		switch full.Status {
		case model.PlanSucceeded, model.PlanFailed, model.PlanSuperseded:
			final[p.Plan.ID] = true
			if full.Status != model.PlanSucceeded {
				msg := "plan " + short(p.Plan.ID) + " " + string(full.Status)
				if full.SupersededBy != "" {
					msg += " by " + short(full.SupersededBy)
				}
				d.n.emit(Event{Step: StepAction, Site: p.Plan.Site, Commit: sha, Message: msg})
			}
		}
	}
	return nil
}

// explore prints how to look around with nkudoctl (and curl).
func (d *demo) explore(ctx context.Context) {
	lines := []string{
		"# dashboard: open " + d.url + "/ and paste the NKUDO_TOKEN value below into its sign-in form (the",
		"#   browser does not know the demo's dev CA: accept the warning or import NKUDO_CA_FILE)",
	}
	// A one-time link carries a single-use code, not the token.
	link, err := d.client.DashboardSignInLink(ctx)
	if err == nil {
		lines = append(lines, "#   or open this one-time sign-in link (one browser, once, within 10 minutes):",
			"#   "+link.URL)
	} else {
		lines = append(lines, "#   (no one-time sign-in link: "+err.Error()+")")
	}
	lines = append(lines,
		"export NKUDO_SERVER="+d.url,
		"export NKUDO_TOKEN="+d.token,
		"export NKUDO_CA_FILE="+d.caFile+"   # the demo's dev CA",
		"go run ./cmd/nkudoctl sites                      # agents, host facts, last heartbeat",
		"go run ./cmd/nkudoctl vms                        # desired vs actual, per site",
		"go run ./cmd/nkudoctl status "+d.second,
		"go run ./cmd/nkudoctl plans --commit "+d.second,
	)
	if d.lastPlan != "" {
		lines = append(lines, "go run ./cmd/nkudoctl logs "+short(d.lastPlan)+"                # what the agent did")
	}
	lines = append(lines,
		"curl --cacert $NKUDO_CA_FILE -H \"Authorization: Bearer $NKUDO_TOKEN\" $NKUDO_SERVER/v1/sites",
		"# change the fleet: edit a manifest in "+d.workDir+", then",
		"#   git -C "+d.workDir+" commit -am 'my change' && go run ./cmd/nkudoctl apply --wait",
	)
	d.n.emit(Event{Step: StepExplore, Message: "explore the fleet from another terminal:", Detail: strings.Join(lines, "\n"),
		Data: map[string]any{"server": d.url, "dashboard": d.url + "/", "signInLink": link.URL, "token": d.token, "caFile": d.caFile, "repo": d.repoID,
			"commits": []string{d.first, d.second}, "repoDir": d.workDir}})
}

// poll calls f until it returns nil or timeout passes.
func poll(ctx context.Context, timeout time.Duration, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-tick.C:
		}
	}
}
