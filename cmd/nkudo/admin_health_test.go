package main

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/controlplane/maintenance"
	"github.com/nkudo/nkudo/store"
)

// healthReport runs `nkudo admin health -o json` and decodes the report.
func healthReport(t *testing.T, env *cptest.Env, extra ...string) (int, maintenance.Report, string) {
	t.Helper()
	args := append(append([]string{"admin", "health", "-o", "json"}, storeArgs(env)...), extra...)
	code, out, errs := runCmd(t, t.Context(), args...)
	var rep maintenance.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("health -o json: exit %d, output is not a report (%v):\n%s%s", code, err, out, errs)
	}
	return code, rep, errs
}

func checkOf(rep maintenance.Report, name string) maintenance.Check {
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	return maintenance.Check{Name: name, Status: "missing"}
}

// TestAdminHealth checks a healthy installation, then breaks it one way at
// a time (an offline site, a stuck plan, a status the forge never took, a
// server certificate close to expiry, an unreachable server) and reads
// each problem back from the report and the exit code.
func TestAdminHealth(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		ctx := t.Context()
		env := cptest.Start(t, o)
		st := env.Store()
		env.NewTenant("acme")
		agent := env.Enroll("acme", "s1")
		if _, err := agent.Client.Heartbeat(ctx, api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion}); err != nil {
			t.Fatal(err)
		}
		env.NewSite("acme", "never-enrolled") // expected to be silent

		code, rep, errs := healthReport(t, env, "--server="+env.URL)
		if code != 0 || rep.Status != maintenance.StatusOK {
			t.Fatalf("healthy installation: exit %d, %+v\n%s", code, rep, errs)
		}
		want := map[string]maintenance.Status{"database": "ok", "pki": "ok", "server": "ok", "sites": "ok", "plans": "ok", "commit statuses": "ok"}
		for name, s := range want {
			if c := checkOf(rep, name); c.Status != s {
				t.Errorf("healthy: check %s = %s (%s), want %s", name, c.Status, c.Message, s)
			}
		}
		if c := checkOf(rep, "sites"); c.Message != "1 of 1 enrolled sites online" {
			t.Errorf("sites message: %q", c.Message)
		}

		// The table form says the same.
		code, out, _ := runCmd(t, ctx, append([]string{"admin", "health"}, storeArgs(env)...)...)
		if code != 0 || !strings.Contains(out, "overall: OK") || !strings.Contains(out, "not asked (pass --server URL)") {
			t.Errorf("table: exit %d\n%s", code, out)
		}

		now := time.Now()
		// A site whose agent went quiet an hour ago.
		env.Enroll("acme", "s2")
		if _, err := st.RecordHeartbeat(ctx, "acme", "s2", store.Heartbeat{Time: now.Add(-time.Hour), Interval: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
		// A site that went quiet because its certificate was revoked: not listed.
		env.Enroll("acme", "s3")
		if _, err := st.RecordHeartbeat(ctx, "acme", "s3", store.Heartbeat{Time: now.Add(-time.Hour), Interval: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
		s3, err := st.GetSite(ctx, "acme", "s3")
		if err != nil {
			t.Fatal(err)
		}
		if err := st.RevokeSerial(ctx, store.Actor{Kind: store.ActorAdmin, ID: "test"}, "acme", "s3", s3.CertSerial, now); err != nil {
			t.Fatal(err)
		}
		// A plan that started two hours ago and has not moved since.
		p := cptest.CreatePlan("acme", "s1", 1, "vm-1")
		if _, err := st.StorePlan(ctx, store.Actor{Kind: store.ActorSystem, ID: "test"}, p, "", now.Add(-3*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := st.StartAction(ctx, "acme", "s1", p.ID, p.Actions[0].ID, now.Add(-2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		// A status the forge has not accepted for an hour, and one of a
		// repository without a forge (never posted, not a problem).
		acme := env.UserClient(env.AdminToken, "acme")
		gh, err := acme.CreateRepo(ctx, api.CreateRepoRequest{Name: "gh", URL: "https://github.com/acme/fleet.git", WebhookSecret: "s", ForgeKind: "github", ForgeProject: "acme/fleet"})
		if err != nil {
			t.Fatal(err)
		}
		plain, err := acme.CreateRepo(ctx, api.CreateRepoRequest{Name: "plain", URL: "https://git.example.com/fleet.git", WebhookSecret: "s"})
		if err != nil {
			t.Fatal(err)
		}
		for _, repo := range []string{gh.ID, plain.ID} {
			if _, err := st.SetCommitStatus(ctx, "acme", store.CommitStatus{RepoID: repo, Commit: strings.Repeat("c", 40), Context: "nkudo/plan", State: store.StateSuccess, UpdatedAt: now.Add(-time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
		// Nothing listens here any more.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "https://" + ln.Addr().String()
		ln.Close()

		code, rep, _ = healthReport(t, env, "--server="+dead, "--cert-warning=9000h")
		if code != 1 || rep.Status != maintenance.StatusFail {
			t.Errorf("degraded installation: exit %d, status %s, want 1, fail", code, rep.Status)
		}
		checks := []struct {
			name   string
			status maintenance.Status
			item   string
		}{
			{"database", "ok", ""},
			{"pki", "warn", "server certificate"},
			{"server", "fail", ""},
			{"sites", "warn", "acme/s2: offline, last heartbeat 1h0m"},
			{"plans", "warn", "acme/s1 plan " + p.ID[:12] + ": in progress, no progress for 2h0m"},
			{"commit statuses", "warn", "acme/gh cccccccccccc nkudo/plan=success: not accepted by github"},
		}
		for _, ck := range checks {
			c := checkOf(rep, ck.name)
			if c.Status != ck.status {
				t.Errorf("check %s = %s (%s), want %s", ck.name, c.Status, c.Message, ck.status)
			}
			if ck.item == "" {
				continue
			}
			if len(c.Items) != 1 || !strings.HasPrefix(c.Items[0], ck.item) {
				t.Errorf("check %s items %q, want one starting %q", ck.name, c.Items, ck.item)
			}
		}
		if c := checkOf(rep, "sites"); c.Message != "1 of 2 enrolled sites online" {
			t.Errorf("sites with one offline and one revoked: %q", c.Message)
		}
	})
}

// TestAdminHealthCannotRun: a missing database is unhealthy (1); a
// configuration that cannot work at all is exit 2.
func TestAdminHealthCannotRun(t *testing.T) {
	dir := t.TempDir()
	code, out, errs := runCmd(t, t.Context(), "admin", "health", "--data-dir="+dir)
	if code != 1 || !strings.Contains(out, "no SQLite database at") || !strings.Contains(out, "needs the database") || !strings.Contains(out, "no dev CA") {
		t.Errorf("empty data dir: exit %d\n%s%s", code, out, errs)
	}
	code, _, errs = runCmd(t, t.Context(), "admin", "health", "--data-dir="+dir, "--database-url=mysql://db/nkudo")
	if code != 2 || !strings.Contains(errs, "mysql") {
		t.Errorf("unsupported database url: exit %d, %q, want 2", code, errs)
	}
	code, _, _ = runCmd(t, t.Context(), "admin", "health", "--output=yaml")
	if code != 2 {
		t.Errorf("bad flag: exit %d, want 2", code)
	}
}
