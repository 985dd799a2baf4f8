package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

func TestMain(m *testing.M) { cptest.Main(m) }

// storeArgs points an admin command at a cptest control plane's database.
func storeArgs(env *cptest.Env) []string {
	args := []string{"--data-dir=" + env.DataDir}
	if env.DatabaseURL != "" {
		args = append(args, "--database-url="+env.DatabaseURL)
	}
	return args
}

// pipeStdin makes os.Stdin a pipe (not a terminal) for the test.
func pipeStdin(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdin
	os.Stdin = r
	t.Cleanup(func() { os.Stdin = old; r.Close(); w.Close() })
}

// tenantFixture is one tenant with an enrolled, reporting site, a site that
// never enrolled, an open enrollment token, a repository, a plan with logs.
type tenantFixture struct {
	tenant cptest.Tenant
	agent  *cptest.Agent
	plan   model.Plan
}

func seedTenant(t *testing.T, env *cptest.Env, id string) tenantFixture {
	t.Helper()
	ctx := t.Context()
	f := tenantFixture{tenant: env.NewTenant(id)}
	f.agent = env.Enroll(id, "s1")
	hb, err := f.agent.Client.Heartbeat(ctx, api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion,
		VMs: []model.ObservedVM{{Name: "vm-1", State: model.VMRunning, Managed: true}}})
	if err != nil {
		t.Fatalf("heartbeat of %s: %v", id, err)
	}
	env.NewSite(id, "s2")
	env.EnrollmentToken(id, "s2")
	if _, err := f.tenant.Client.CreateRepo(ctx, api.CreateRepoRequest{Name: "fleet", URL: "https://git.example.com/" + id + ".git", WebhookSecret: "s"}); err != nil {
		t.Fatal(err)
	}
	f.plan = cptest.CreatePlan(id, "s1", hb.InventoryVersion, "vm-2", "vm-3")
	if _, err := env.Store().StorePlan(ctx, store.Actor{Kind: store.ActorSystem, ID: "test"}, f.plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Store().AppendLogs(ctx, id, "s1", []store.LogLine{
		{PlanID: f.plan.ID, Seq: 1, Time: time.Now(), Stream: store.StreamAgent, Line: "one"},
		{PlanID: f.plan.ID, Seq: 2, Time: time.Now(), Stream: store.StreamAgent, Line: "two"},
	}); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestAdminTenantDeletePurge offboards one tenant of a running control
// plane and checks that its data is gone, its agent is refused on its next
// request (also after a tenant and site of the same names come back), the
// audit chain still verifies with the deletion recorded, and the other
// tenant is untouched.
func TestAdminTenantDeletePurge(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		ctx := t.Context()
		env := cptest.Start(t, o)
		acme := seedTenant(t, env, "acme")
		other := seedTenant(t, env, "other")
		st := env.Store()
		pipeStdin(t)
		del := func(extra ...string) (int, string, string) {
			return runCmd(t, ctx, append(append([]string{"admin", "tenant", "delete"}, extra...), storeArgs(env)...)...)
		}

		code, out, errs := del("acme")
		if code != 1 || !strings.Contains(errs, "without --purge") {
			t.Fatalf("delete without --purge: exit %d, stderr %q", code, errs)
		}
		for _, want := range []string{"would delete", "API tokens", "agent certificates to revoke", "execution log lines"} {
			if !strings.Contains(out, want) {
				t.Errorf("delete without --purge: output lacks %q:\n%s", want, out)
			}
		}
		for _, row := range [][2]string{{"sites", "2"}, {"plans (with their actions)", "1"}, {"execution log lines", "2"}, {"enrollment tokens", "2"}} {
			if !hasRow(out, row[0], row[1]) {
				t.Errorf("delete without --purge: want row %q = %s in:\n%s", row[0], row[1], out)
			}
		}
		if code, _, errs := del("acme", "--purge"); code != 1 || !strings.Contains(errs, "--yes") {
			t.Errorf("--purge with stdin not a terminal and no --yes: exit %d, %q", code, errs)
		}
		if _, err := acme.agent.Client.Heartbeat(ctx, api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion}); err != nil {
			t.Fatalf("a refused delete changed something: heartbeat: %v", err)
		}
		if code, _, errs := del("nope", "--purge", "--yes"); code != 1 || !strings.Contains(errs, "does not exist") {
			t.Errorf("delete of a missing tenant: exit %d, %q", code, errs)
		}

		code, out, errs = del("acme", "--purge", "--yes")
		if code != 0 || !strings.Contains(out, "tenant acme deleted; 1 agent certificate(s) revoked") {
			t.Fatalf("delete --purge --yes: exit %d\n%s%s", code, out, errs)
		}

		// The still-running agent is refused on its very next request.
		_, err := acme.agent.Client.Heartbeat(ctx, api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion})
		if !errors.Is(err, api.ErrCertRevoked) {
			t.Errorf("heartbeat of the purged tenant's agent: %v, want %v", err, api.ErrCertRevoked)
		}
		if _, err := acme.tenant.Client.ListSites(ctx); !errors.Is(err, api.ErrUnauthorized) {
			t.Errorf("the purged tenant's API token: %v, want %v", err, api.ErrUnauthorized)
		}
		if _, err := env.Admin.GetTenant(ctx, "acme"); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("get purged tenant: %v, want not found", err)
		}
		if _, err := st.GetPlan(ctx, "acme", acme.plan.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("plan of the purged tenant: %v", err)
		}
		if _, err := st.Logs(ctx, "acme", acme.plan.ID, 0, 0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("logs of the purged tenant: %v", err)
		}
		for what, n := range map[string]func() (int, error){
			"sites":             func() (int, error) { s, err := st.ListSites(ctx, "acme"); return len(s), err },
			"api tokens":        func() (int, error) { s, err := st.ListAPITokens(ctx, "acme"); return len(s), err },
			"enrollment tokens": func() (int, error) { s, err := st.ListEnrollmentTokens(ctx, "acme"); return len(s), err },
			"repositories":      func() (int, error) { s, err := st.ListRepositories(ctx, "acme"); return len(s), err },
		} {
			if got, err := n(); err != nil || got != 0 {
				t.Errorf("%s of the purged tenant: %d left (%v)", what, got, err)
			}
		}

		// The deletion is on the record, and the chain still verifies.
		v, err := env.Admin.VerifyAudit(ctx)
		if err != nil || !v.OK {
			t.Errorf("audit chain after purge: %+v %v", v, err)
		}
		events, err := st.ListAudit(ctx, "acme", 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, e := range events {
			actions = append(actions, e.Action)
		}
		joined := strings.Join(actions, " ")
		for _, want := range []string{"site.revoke", "tenant.delete", "tenant.purge"} {
			if !strings.Contains(joined, want) {
				t.Errorf("audit events of acme lack %s: %v", want, actions)
			}
		}

		// A tenant and site of the same names later do not revive the old certificate.
		if _, err := env.Admin.CreateTenant(ctx, api.CreateTenantRequest{ID: "acme"}); err != nil {
			t.Fatal(err)
		}
		env.NewSite("acme", "s1")
		if _, err := acme.agent.Client.Heartbeat(ctx, api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion}); !errors.Is(err, api.ErrCertRevoked) {
			t.Errorf("old agent against a re-created tenant and site: %v, want %v", err, api.ErrCertRevoked)
		}

		// The other tenant is untouched.
		if _, err := other.agent.Client.Heartbeat(ctx, api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion,
			VMs: []model.ObservedVM{{Name: "vm-1", State: model.VMRunning, Managed: true}}}); err != nil {
			t.Errorf("heartbeat of the other tenant: %v", err)
		}
		sites, err := other.tenant.Client.ListSites(ctx)
		if err != nil || len(sites) != 2 {
			t.Errorf("other tenant's sites: %d (%v), want 2", len(sites), err)
		}
		if p, err := st.GetPlan(ctx, "other", other.plan.ID); err != nil || len(p.Actions) != 2 {
			t.Errorf("other tenant's plan: %v", err)
		}
		if lines, err := st.Logs(ctx, "other", other.plan.ID, 0, 0); err != nil || len(lines) != 2 {
			t.Errorf("other tenant's logs: %d lines (%v), want 2", len(lines), err)
		}
		if et, err := st.ListEnrollmentTokens(ctx, "other"); err != nil || len(et) != 2 {
			t.Errorf("other tenant's enrollment tokens: %d (%v), want 2", len(et), err)
		}
	})
}

// hasRow reports whether a tabular line has label followed by value.
func hasRow(out, label, value string) bool {
	for _, l := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), label)
		if ok && strings.TrimSpace(rest) == value {
			return true
		}
	}
	return false
}

func TestConfirm(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"acme\n", true},
		{"  acme  \n", true},
		{"acme", true},
		{"y\n", false},
		{"acm\n", false},
		{"", false},
	} {
		var out strings.Builder
		if got := confirm(strings.NewReader(tc.in), &out, "acme"); got != tc.want {
			t.Errorf("confirm(%q) = %v, want %v", tc.in, got, tc.want)
		}
		if !strings.Contains(out.String(), "Type the tenant ID (acme)") {
			t.Errorf("prompt: %q", out.String())
		}
	}
}
