package deploy_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/store"
)

// promtool finds promtool (Debian's prometheus package), skipping loudly
// without it unless NKUDO_PROMTOOL=require.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("NKUDO_PROMTOOL") == "require" {
			t.Fatalf("NKUDO_PROMTOOL=require but promtool is not on PATH (apt-get install prometheus): %v", err)
		}
		t.Skipf("SKIPPED: promtool is not on PATH, the alert rules are NOT checked (apt-get install prometheus; NKUDO_PROMTOOL=require makes this a failure)")
	}
	return p
}

// TestPrometheusRules checks alerts.yaml with promtool and runs its unit
// tests (alerts_test.yaml).
func TestPrometheusRules(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "alerts.yaml"},
		{"test", "rules", "alerts_test.yaml"},
	} {
		cmd := exec.CommandContext(t.Context(), bin, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// controlPlaneMetrics starts a control plane, makes it observe every one of
// its own series (an enrollment, heartbeats, an action result, requests, a
// failed reconcile)
// and returns the names it exports, with a histogram's _bucket, _sum and
// _count series.
func controlPlaneMetrics(t *testing.T) map[string]bool {
	t.Helper()
	env := cptest.Start(t, cptest.Options{})
	env.NewTenant("acme")
	agent := env.Enroll("acme", "s1")
	for range 2 { // the lag is observed from the second heartbeat on
		if _, err := agent.Client.Heartbeat(t.Context(), api.HeartbeatRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256}
	plan := model.Plan{ID: "p1", Tenant: "acme", Site: "s1", Actions: []model.Action{{ID: "a1", Operation: model.OpCreate, VM: "vm", Reason: model.ReasonMissing, Spec: &spec, SpecHash: spec.Hash()}}}
	if _, err := env.Store().StorePlan(t.Context(), store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Client.ReportResults(t.Context(), api.ActionResult{PlanID: "p1", ActionID: "a1", Status: model.ActionSucceeded}); err != nil {
		t.Fatal(err)
	}
	// The GitOps loop registers its series on the server's registry (as
	// nkudo serve wires it); a repository it may not fetch (a local source,
	// refused by default) fails a reconcile.
	rec, err := reconciler.New(reconciler.Options{Store: env.Store(), DataDir: t.TempDir(), Metrics: env.Server().Registry()})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := env.Store().CreateRepository(t.Context(), store.Actor{Kind: store.ActorAdmin, ID: "test"}, store.Repository{Tenant: "acme", Name: "fleet", URL: "file://" + t.TempDir(), Branch: "main"}, "hook-secret")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Reconcile(t.Context(), repo, ""); err == nil {
		t.Fatal("reconcile of a refused local source succeeded")
	}
	mfs, err := env.Server().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		n := mf.GetName()
		names[n] = true
		if mf.GetType().String() == "HISTOGRAM" {
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
		}
	}
	return names
}

var metricName = regexp.MustCompile(`\bnkudo_[a-z0-9_]+`)

// checkExprs fails for every nkudo_ metric an expression uses that the
// control plane does not export, and returns the names used.
func checkExprs(t *testing.T, file string, exprs []string, exported map[string]bool) map[string]bool {
	t.Helper()
	used := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			used[n] = true
			if !exported[n] {
				t.Errorf("%s queries %s, which the control plane does not export (in %q)", file, n, e)
			}
		}
	}
	if len(used) == 0 {
		t.Errorf("%s queries no nkudo_ metric", file)
	}
	return used
}

// TestDashboardAndRulesUseExportedMetrics: the dashboard parses, and the
// dashboard and the alert rules query only metrics the control plane has.
func TestDashboardAndRulesUseExportedMetrics(t *testing.T) {
	exported := controlPlaneMetrics(t)

	b, err := os.ReadFile("grafana/nkudo.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("grafana/nkudo.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatalf("grafana/nkudo.json: uid %q, title %q, %d panels", dash.UID, dash.Title, len(dash.Panels))
	}
	var exprs []string
	var ids []int
	for _, p := range dash.Panels {
		if slices.Contains(ids, p.ID) {
			t.Errorf("grafana/nkudo.json: panel id %d twice", p.ID)
		}
		ids = append(ids, p.ID)
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("grafana/nkudo.json: panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	dashUsed := checkExprs(t, "grafana/nkudo.json", exprs, exported)

	b, err = os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("prometheus/alerts.yaml: %v", err)
	}
	exprs = exprs[:0]
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	alertUsed := checkExprs(t, "prometheus/alerts.yaml", exprs, exported)

	// The dashboard shows what the alerts watch.
	for n := range alertUsed {
		if !dashUsed[n] {
			t.Errorf("the alerts use %s but the dashboard does not show it", n)
		}
	}
}
