package integration

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
)

// TestEnrollAndHeartbeat walks an agent's life through the api client
// only: enrollment pinned to the CA fingerprint, heartbeat, facts visible
// to the tenant, a stored plan delivered by long-poll, results and logs.
func TestEnrollAndHeartbeat(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		logs := &cpLogCapture{}
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		env := cptest.Start(t, o)
		ctx := t.Context()
		acme := env.NewTenant("acme")
		if _, err := acme.Client.CreateSite(ctx, "store-042"); err != nil {
			t.Fatal(err)
		}
		const setupKey = "A1B2C3D4-SETUP-KEY-SECRET"
		if err := acme.Client.SetNetBird(ctx, "store-042", api.SetNetBirdRequest{ManagementURL: "https://nb.example.net", SetupKey: setupKey}); err != nil {
			t.Fatal(err)
		}
		tok, err := acme.Client.CreateEnrollmentToken(ctx, "store-042", 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		wantCmd := "nkudo-edge enroll --control-plane " + env.URL + " --token " + tok.Token + " --ca-hash " + env.CAFingerprint
		if tok.Command != wantCmd {
			t.Errorf("command = %q\nwant      %q", tok.Command, wantCmd)
		}

		// Enroll with nothing but the printed URL, token and fingerprint.
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := pki.NewCSR(key, "whatever-the-agent-says")
		if err != nil {
			t.Fatal(err)
		}
		pinned, err := api.NewClient(api.ClientConfig{BaseURL: env.URL, CAFingerprint: tok.CAFingerprint})
		if err != nil {
			t.Fatal(err)
		}
		enr, err := pinned.Enroll(ctx, api.EnrollRequest{Token: tok.Token, CSR: string(csr), Hostname: "edge-host"})
		if err != nil {
			t.Fatalf("enroll: %v", err)
		}
		pinned.CloseIdleConnections()
		if enr.Tenant != "acme" || enr.Site != "store-042" {
			t.Errorf("enrolled as %s/%s, want acme/store-042", enr.Tenant, enr.Site)
		}
		if enr.NetBird == nil || enr.NetBird.SetupKey != setupKey || enr.NetBird.ManagementURL != "https://nb.example.net" {
			t.Errorf("enrollment NetBird config = %+v, want the site's key and URL", enr.NetBird)
		}
		certs, err := pki.ParseCertPEM([]byte(enr.Certificate))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: env.CAPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("issued certificate does not verify: %v", err)
		}
		if id, err := pki.IdentityFromCert(certs[0]); err != nil || id != (pki.Identity{Tenant: "acme", Site: "store-042"}) {
			t.Errorf("certificate identity = %+v, %v", id, err)
		}
		if pki.Fingerprint(firstCert(t, enr.CA).Raw) != env.CAFingerprint {
			t.Error("CA bundle in the enrollment answer does not match the fingerprint")
		}
		cert, err := cptest.KeyPair(key, []byte(enr.Certificate))
		if err != nil {
			t.Fatal(err)
		}
		agent := env.AgentClient(cert)

		// Heartbeat with facts and one VM.
		vm := model.ObservedVM{Name: "pos-1", State: model.VMRunning, Managed: true, SpecHash: "abc", CPUs: 2, MemoryMiB: 1024}
		hb, err := agent.Heartbeat(ctx, api.HeartbeatRequest{
			AgentVersion: "test",
			Facts:        api.HostFacts{Hostname: "edge-host", CPUs: 8, MemoryMiB: 16384, KVM: true, Hypervisor: api.HypervisorFacts{Name: "cloud-hypervisor", Version: "v53.0"}},
			VMs:          []model.ObservedVM{vm},
		})
		if err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		if hb.NextHeartbeat.D() < 10*time.Second {
			t.Errorf("next heartbeat %s, want at least 10s", hb.NextHeartbeat)
		}
		if hb.InventoryVersion != 1 {
			t.Errorf("inventory version %d after the first report, want 1", hb.InventoryVersion)
		}

		// The tenant sees facts, liveness and the VM; never the setup key.
		site, err := acme.Client.GetSite(ctx, "store-042")
		if err != nil {
			t.Fatal(err)
		}
		if site.Facts == nil || site.Facts.Hostname != "edge-host" || site.Facts.Hypervisor.Version != "v53.0" {
			t.Errorf("site facts = %+v", site.Facts)
		}
		if !site.Online || site.LastHeartbeat.IsZero() || site.EnrolledAt.IsZero() || site.Revoked {
			t.Errorf("site = %+v, want online, enrolled, not revoked", site)
		}
		if !site.NetBirdConfigured {
			t.Error("site does not report NetBird as configured")
		}
		raw := mustGet(t, env, acme.Token, api.Path(api.PathSite, "store-042"))
		if strings.Contains(raw, setupKey) {
			t.Error("a user endpoint returned the NetBird setup key")
		}
		vms, err := acme.Client.SiteVMs(ctx, "store-042")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]api.VMView{{Name: "pos-1", Actual: &vm}}, vms.VMs); diff != "" {
			t.Errorf("VMs (-want +got):\n%s", diff)
		}

		// A plan stored for the site reaches the agent's long-poll.
		plan := cptest.CreatePlan("acme", "store-042", hb.InventoryVersion, "web-1")
		if _, err := env.Store().StorePlan(ctx, store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
			t.Fatal(err)
		}
		got, err := agent.WaitPlan(ctx, "", 10*time.Second)
		if err != nil || got == nil {
			t.Fatalf("WaitPlan = %v, %v; want the stored plan", got, err)
		}
		if got.Plan.ID != plan.ID || len(got.Plan.Actions) != 1 {
			t.Fatalf("WaitPlan got plan %s with %d actions, want %s", got.Plan.ID, len(got.Plan.Actions), plan.ID)
		}
		if again, err := agent.WaitPlan(ctx, plan.ID, 0); err != nil || again != nil {
			t.Errorf("WaitPlan after the current plan = %v, %v; want nothing new", again, err)
		}

		// Results are idempotent.
		res := api.ActionResult{PlanID: plan.ID, ActionID: plan.Actions[0].ID, Status: model.ActionSucceeded, FinishedAt: time.Now()}
		ack, err := agent.ReportResults(ctx, res)
		if err != nil {
			t.Fatal(err)
		}
		if !ack.Results[0].New || ack.Results[0].PlanStatus != model.PlanSucceeded {
			t.Errorf("first result ack = %+v, want new and plan succeeded", ack.Results[0])
		}
		ack, err = agent.ReportResults(ctx, res)
		if err != nil || ack.Results[0].New {
			t.Errorf("repeated result ack = %+v, %v; want accepted, not new", ack, err)
		}

		// Logs: a gap is reported, duplicates are dropped.
		line := func(seq int64) api.LogLine {
			return api.LogLine{PlanID: plan.ID, ActionID: plan.Actions[0].ID, Seq: seq, Time: time.Now(), Stream: api.StreamStdout, Line: "line"}
		}
		lr, err := agent.SendLogs(ctx, []api.LogLine{line(1), line(2), line(4)})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(api.LogsResponse{Accepted: 3, Gaps: []api.LogGap{{PlanID: plan.ID, From: 3, To: 3}}}, lr); diff != "" {
			t.Errorf("logs with a gap (-want +got):\n%s", diff)
		}
		lr, err = agent.SendLogs(ctx, []api.LogLine{line(2), line(3)})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(api.LogsResponse{Accepted: 1, Duplicates: 1}, lr); diff != "" {
			t.Errorf("logs filling the gap (-want +got):\n%s", diff)
		}
		page, err := acme.Client.Logs(ctx, plan.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Lines) != 4 || len(page.Gaps) != 0 {
			t.Errorf("log page has %d lines and gaps %v, want 4 and none", len(page.Lines), page.Gaps)
		}

		// Renewal keeps the identity and hands out the NetBird config again.
		csr2, _ := pki.NewCSR(key, "renew")
		ren, err := agent.Renew(ctx, api.RenewRequest{CSR: string(csr2)})
		if err != nil {
			t.Fatalf("renew: %v", err)
		}
		rc, _ := pki.ParseCertPEM([]byte(ren.Certificate))
		if id, _ := pki.IdentityFromCert(rc[0]); id != (pki.Identity{Tenant: "acme", Site: "store-042"}) || ren.NetBird == nil {
			t.Errorf("renewed identity %+v, NetBird %+v", id, ren.NetBird)
		}

		// The audit log recorded the mutations, and the chain verifies.
		evs, err := acme.Client.ListAudit(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		actions := map[string]bool{}
		for _, e := range evs {
			actions[e.Action] = true
		}
		if len(evs) < 4 {
			t.Errorf("audit has %d events for acme, want site creation, NetBird, token, enrollment, …: %v", len(evs), actions)
		}
		v, err := env.Admin.VerifyAudit(ctx)
		if err != nil || !v.OK || v.Events < int64(len(evs)) {
			t.Errorf("audit chain: %+v, %v", v, err)
		}

		// Metrics saw the enrollment and the heartbeat.
		metrics := mustGet(t, env, "", api.PathMetrics)
		for _, want := range []string{`nkudo_enrollment_attempts_total{result="ok"} 1`, `nkudo_heartbeats_total 1`, `nkudo_http_request_duration_seconds_count{code="200",method="POST",route="/v1/agent/heartbeat"} 1`, "go_goroutines", "process_"} {
			if !strings.Contains(metrics, want) {
				t.Errorf("metrics lack %q", want)
			}
		}
		if strings.Contains(metrics, setupKey) || strings.Contains(metrics, tok.Token) {
			t.Error("metrics expose a secret")
		}

		// Nothing bravoSecret reached the (debug-level) server log.
		_, tokSecret, _ := strings.Cut(tok.Token, ".")
		for name, sec := range map[string]string{"setup key": setupKey, "enrollment secret": tokSecret, "API token": acme.Token, "admin token": env.AdminToken} {
			if strings.Contains(logs.String(), sec) {
				t.Errorf("the server log contains the %s", name)
			}
		}
		if !strings.Contains(logs.String(), "site enrolled") {
			t.Error("the captured log is empty: the secret check above proves nothing")
		}
	})
}

// cpLogCapture is a bytes.Buffer safe for the server's goroutines.
type cpLogCapture struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *cpLogCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *cpLogCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func firstCert(t *testing.T, bundle string) *x509.Certificate {
	t.Helper()
	cs, err := pki.ParseCertPEM([]byte(bundle))
	if err != nil {
		t.Fatal(err)
	}
	return cs[0]
}

// envelopeCode decodes the error envelope of a body ("" when it is not one).
func envelopeCode(body string) api.Code {
	var eb api.ErrorBody
	if json.Unmarshal([]byte(body), &eb) != nil {
		return ""
	}
	return eb.Error.Code
}

func cpDiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// mustGet fetches a path with an optional bearer token; anything but 200 fails.
func mustGet(t *testing.T, env *cptest.Env, token, path string) string {
	t.Helper()
	status, body := env.Raw(nil, token, "GET", path, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", path, status, body)
	}
	return body
}
