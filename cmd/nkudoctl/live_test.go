package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// hooks hands the control plane's GitOps hooks to a loop built after the
// server started (the loop needs the server's store).
type hooks struct {
	mu   sync.Mutex
	loop *reconciler.Loop
}

func (h *hooks) get() *reconciler.Loop { h.mu.Lock(); defer h.mu.Unlock(); return h.loop }

func (h *hooks) Trigger(ctx context.Context, tenant, repo, ref string) (api.TriggerResult, error) {
	return h.get().Trigger(ctx, tenant, repo, ref)
}
func (h *hooks) InventoryChanged(ctx context.Context, tenant, site string) {
	if l := h.get(); l != nil {
		l.InventoryChanged(ctx, tenant, site)
	}
}
func (h *hooks) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.get().Webhooks.ServeHTTP(w, r) }

// playAgent heartbeats and applies every plan of its site in memory.
func playAgent(ctx context.Context, c *api.Client) {
	vms := map[string]model.ObservedVM{}
	last := ""
	for ctx.Err() == nil {
		list := []model.ObservedVM{}
		for _, v := range vms {
			list = append(list, v)
		}
		hb, err := c.Heartbeat(ctx, api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion, VMs: list})
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		p, err := c.WaitPlan(ctx, last, 200*time.Millisecond)
		if err != nil || p == nil || (p.Status != model.PlanPending && p.Status != model.PlanInProgress) || p.Plan.InventoryVersion != hb.InventoryVersion {
			continue
		}
		for _, a := range p.Plan.Actions {
			v := vms[a.VM]
			switch a.Operation {
			case model.OpCreate:
				v = model.ObservedVM{Name: a.VM, State: model.VMStopped, Managed: true, SpecHash: a.SpecHash, CPUs: a.Spec.CPUs, MemoryMiB: a.Spec.MemoryMiB}
			case model.OpStart:
				v.State = model.VMRunning
			case model.OpStop:
				v.State = model.VMStopped
			}
			if a.Operation == model.OpDelete {
				delete(vms, a.VM)
			} else {
				vms[a.VM] = v
			}
			c.ReportResults(ctx, api.ActionResult{PlanID: p.Plan.ID, ActionID: a.ID, Status: model.ActionSucceeded, FinishedAt: time.Now()})
		}
		last = p.Plan.ID
	}
}

func nkudoctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), args, &Streams{Out: &out, Err: &errb})
	return code, out.String(), errb.String()
}

// TestLiveCommands runs the live commands against a real control plane
// with the GitOps loop, a real git repository and an agent played through
// the api client.
func TestLiveCommands(t *testing.T) {
	h := &hooks{}
	env := cptest.Start(t, cptest.Options{Reconciler: h, Webhooks: h})
	acme := env.NewTenant("acme")
	g := gittest.New(t)
	g.Fleet("manifests", 1, 2)
	if _, err := acme.Client.CreateRepo(t.Context(), api.CreateRepoRequest{Name: "fleet", URL: "file://" + g.Remote, Branch: "main", Path: "manifests", WebhookSecret: "s"}); err != nil {
		t.Fatal(err)
	}
	loop, err := reconciler.NewLoop(reconciler.Options{Store: env.Store(), DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
		PollInterval: -1, ApplyCheckInterval: 50 * time.Millisecond, DriftInterval: 50 * time.Millisecond,
		AllowLocalSources: true}) // the repository is a local one
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.loop = loop
	h.mu.Unlock()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { loop.Run(ctx) })
	agent := env.Enroll("acme", gittest.SiteName(1))
	wg.Go(func() { playAgent(ctx, agent.Client) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	cfg := filepath.Join(t.TempDir(), "config.json")
	t.Setenv("NKUDO_CONFIG", cfg)
	t.Setenv("NKUDO_SERVER", "")
	t.Setenv("NKUDO_TOKEN", "")
	if code, out, errs := nkudoctl(t, "login", env.URL, "--token", acme.Token, "--ca-hash", env.CAFingerprint); code != 0 || !strings.Contains(out, "logged in") {
		t.Fatalf("login: %d %s %s", code, out, errs)
	}
	if st, err := os.Stat(cfg); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v %v", st, err)
	}

	c1 := g.Commit("one site, two VMs")
	code, out, errs := nkudoctl(t, "apply", "--wait", "--timeout", "30s")
	if code != 0 || !strings.Contains(out, "commit "+c1) || !strings.Contains(out, "nkudo/apply success") {
		t.Fatalf("apply --wait: %d\n%s\n%s", code, out, errs)
	}
	checks := []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"status"}, 0, []string{c1, "nkudo/validate", "nkudo/apply", "success", "site-0001"}},
		{[]string{"status", c1, "-o", "json"}, 0, []string{`"commit": "` + c1}},
		{[]string{"sites"}, 0, []string{"site-0001", "yes"}},
		{[]string{"vms"}, 0, []string{"site-0001", "vm-01", "Running"}},
		{[]string{"plans", "--site", "site-0001"}, 0, []string{"succeeded", shortSHA(c1)}},
		{[]string{"diff", filepath.Join(g.Work, "manifests")}, 0, []string{"no changes"}},
		{[]string{"repos", "show", "fleet"}, 0, []string{"Last seen:", c1}},
		{[]string{"repos", "reconcile"}, 0, []string{"reconcile of fleet queued"}},
	}
	for _, ck := range checks {
		code, out, errs := nkudoctl(t, ck.args...)
		if code != ck.code {
			t.Errorf("%v: exit %d, want %d\n%s%s", ck.args, code, ck.code, out, errs)
		}
		for _, w := range ck.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", ck.args, w, out)
			}
		}
	}
	// -o json: apply prints the commit's final report, --dry-run its own, and nothing else.
	code, out, errs = nkudoctl(t, "apply", "--wait", "-o", "json", "--timeout", "30s")
	var rep commitReport
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || rep.Commit != c1 || len(rep.Statuses) != 3 || len(rep.Sites) != 1 {
		t.Errorf("apply --wait -o json: exit %d, %v: %+v\n%s%s", code, err, rep, out, errs)
	}
	code, out, errs = nkudoctl(t, "apply", "--dry-run", "-o", "json")
	var dry dryRunReport
	if err := json.Unmarshal([]byte(out), &dry); code != 0 || err != nil || dry.Repo != "fleet" || dry.DesiredNow != c1 || dry.InFlight == nil {
		t.Errorf("apply --dry-run -o json: exit %d, %v: %+v\n%s%s", code, err, dry, out, errs)
	}
	plans, err := acme.Client.ListPlans(t.Context(), api.PlanFilter{})
	if err != nil || len(plans) == 0 {
		t.Fatalf("plans: %v", err)
	}
	// A commit is named by any unique prefix, the 12 digits the CLI prints included.
	if code, out, errs := nkudoctl(t, "status", shortSHA(c1)); code != 0 || !strings.Contains(out, "fleet @ "+c1) {
		t.Errorf("status %s: exit %d\n%s%s", shortSHA(c1), code, out, errs)
	}
	if code, out, errs := nkudoctl(t, "plans", "--commit", c1[:7]); code != 0 || !strings.Contains(out, plans[0].Plan.ID[:12]) {
		t.Errorf("plans --commit %s: exit %d\n%s%s", c1[:7], code, out, errs)
	}
	repos, err := acme.Client.ListRepos(t.Context())
	if err != nil || len(repos) != 1 {
		t.Fatalf("repos: %v %v", repos, err)
	}
	for _, sha := range []string{"feedbeef1" + strings.Repeat("0", 31), "feedbeef2" + strings.Repeat("0", 31)} {
		if _, err := env.Store().SetCommitStatus(t.Context(), "acme", store.CommitStatus{RepoID: repos[0].ID, Commit: sha,
			Context: "nkudo/validate", State: store.StateSuccess, UpdatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "feedbeef"}, "commit feedbeef is ambiguous: it starts feedbeef1000…, feedbeef2000…; give more digits"},
		{[]string{"plans", "--commit", "FEEDBEEF"}, "commit FEEDBEEF is ambiguous"},
		{[]string{"status", "0badc0de"}, "no commit starting with 0badc0de has a status or a plan"},
	} {
		if code, out, errs := nkudoctl(t, tc.args...); code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, want 2 and %q\n%s%s", tc.args, code, tc.want, out, errs)
		}
	}
	for _, args := range [][]string{{"logs", plans[0].Plan.ID[:12]}, {"logs", "--follow", plans[0].Plan.ID}} {
		// A finished plan: --follow returns once every line was sent.
		if code, out, errs := nkudoctl(t, args...); code != 0 {
			t.Errorf("%v: %d %s %s", args, code, out, errs)
		}
	}
	if code, _, errs := nkudoctl(t, "logs", "abc"); code != 2 || !strings.Contains(errs, "at least 8 characters") {
		t.Errorf("logs with a short prefix: %d %s", code, errs)
	}

	// The live diff sees a local edit that is not committed.
	g.Write("manifests/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Stopped", 1))
	if code, out, _ := nkudoctl(t, "diff", filepath.Join(g.Work, "manifests")); code != 1 || !strings.Contains(out, "vm-02") || !strings.Contains(out, "vm-01") {
		t.Errorf("live diff of an edit: exit %d\n%s", code, out)
	}
	// Its plan IDs are the logged-in tenant's, as the control plane's are.
	code, out, _ = nkudoctl(t, "diff", filepath.Join(g.Work, "manifests"), "-o", "json")
	var live struct {
		Sites []struct {
			Plan struct {
				ID     string `json:"id"`
				Tenant string `json:"tenant"`
			} `json:"plan"`
		} `json:"sites"`
	}
	if err := json.Unmarshal([]byte(out), &live); code != 1 || err != nil || len(live.Sites) != 1 || live.Sites[0].Plan.Tenant != "acme" || live.Sites[0].Plan.ID == "" {
		t.Errorf("live diff -o json: exit %d, %v: %+v\n%s", code, err, live, out)
	}

	// An invalid commit: apply says so and exits 1.
	g.Write("manifests/site-0001.yaml", strings.Replace(gittest.Site("site-0001"), "kind: Site", "kind: Sight", 1))
	c2 := g.Commit("broken")
	code, out, errs = nkudoctl(t, "apply", "--wait", "--timeout", "30s")
	if code != 1 || !strings.Contains(out, "nkudo/validate  failure") {
		t.Errorf("apply of an invalid commit (%s): exit %d\n%s%s", c2[:8], code, out, errs)
	}
	if code, _, _ := nkudoctl(t, "status", c2); code != 1 {
		t.Errorf("status of an invalid commit: exit %d, want 1", code)
	}
	if code, out, _ := nkudoctl(t, "apply", "--dry-run"); code != 0 || !strings.Contains(out, "would reconcile fleet") {
		t.Errorf("apply --dry-run: %d %s", code, out)
	}
}

// TestLiveTableConvergedOnlyWithApply: the live table of apply --wait says
// "converged" only next to nkudo/apply success, never beside a pending one.
func TestLiveTableConvergedOnlyWithApply(t *testing.T) {
	rep := commitReport{Sites: []siteProgress{{Site: "store-042", Status: "succeeded"}, {Site: "store-043", Status: "in_progress"}}}
	pending := strings.Join(liveLines(rep, "pending", "1 of 2 sites converged; waiting for store-043"), "\n")
	if strings.Contains(pending, "converged ✓") || !strings.Contains(pending, "store-042                plan succeeded") {
		t.Errorf("live table with nkudo/apply pending:\n%s", pending)
	}
	rep.Sites[1].Status = "succeeded"
	done := strings.Join(liveLines(rep, "success", "2 of 2 sites converged"), "\n")
	if strings.Count(done, "converged ✓") != 2 || !strings.HasSuffix(done, "nkudo/apply: success 2 of 2 sites converged") {
		t.Errorf("live table with nkudo/apply success:\n%s", done)
	}
}
