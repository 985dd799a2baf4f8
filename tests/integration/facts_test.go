package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
)

// heartbeatLog keeps the facts of every heartbeat the agent sends.
type heartbeatLog struct {
	agent.ControlPlane
	mu    sync.Mutex
	facts []api.HostFacts
}

func (h *heartbeatLog) Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	h.mu.Lock()
	h.facts = append(h.facts, req.Facts)
	h.mu.Unlock()
	return h.ControlPlane.Heartbeat(ctx, req)
}

func (h *heartbeatLog) sent() []api.HostFacts {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]api.HostFacts(nil), h.facts...)
}

// TestHostFactsTypedFields: the agent reports CPU model, agent version,
// the reasons for unknown facts and its outbox losses in HostFacts' typed
// fields once the control plane lists FeatureTypedFacts (its first
// heartbeat, before it knows, uses the legacy labels an older control
// plane accepts), and the site view shows them typed either way.
func TestHostFactsTypedFields(t *testing.T) {
	env := startEdgeCP(t, false)
	e := newEdgeSite(t, env, "acme", "store-1")
	hb := &heartbeatLog{}
	e.wrap = func(c agent.ControlPlane) agent.ControlPlane { hb.ControlPlane = c; return hb }
	e.start()
	waitEdge(t, "two heartbeats", 20*time.Second, func() (bool, string) { return len(hb.sent()) >= 2, "" })
	sent := hb.sent()
	first, later := sent[0], sent[1]
	if first.AgentVersion != "" || first.Labels[api.LegacyLabelAgentVersion] != "test" {
		t.Errorf("first heartbeat (the control plane's features not yet known) = %+v, want the legacy labels", first)
	}
	if later.AgentVersion != "test" || len(later.Labels) != 0 {
		t.Errorf("later heartbeat = %+v, want typed fields and no legacy labels", later)
	}
	// What the agent reports (this host's real facts) is what the site shows.
	site, err := env.UserClient(env.AdminToken, "acme").GetSite(t.Context(), "store-1")
	if err != nil {
		t.Fatal(err)
	}
	if site.Facts == nil {
		t.Fatal("site has no facts")
	}
	if d := cmp.Diff(later.Typed(), *site.Facts, cmp.FilterPath(func(p cmp.Path) bool {
		return strings.HasPrefix(p.String(), "Disk") // free space moves between heartbeats
	}, cmp.Ignore())); d != "" {
		t.Errorf("site facts (-sent +shown):\n%s", d)
	}
	if site.Facts.AgentVersion != "test" || (site.Facts.CPUModel == "" && site.Facts.Unknown["cpuModel"] == "") {
		t.Errorf("site facts = %+v, want the agent version and a CPU model or why it is unknown", site.Facts)
	}
}

// TestHostFactsFromAnOlderAgent: a heartbeat in the legacy form (labels,
// as agents that predate the typed fields send it) is accepted and shown
// typed; the typed form is accepted by the strict decoder; a fact field
// the control plane does not know is still refused.
func TestHostFactsFromAnOlderAgent(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		env := cptest.Start(t, o)
		env.NewTenant("acme")
		ag := env.Enroll("acme", "store-1")
		ctx := t.Context()
		legacy := api.HostFacts{Hostname: "edge-1", Labels: map[string]string{
			"cpuModel": "Old CPU", "agentVersion": "v0.9.0", "kvmError": "open /dev/kvm: permission denied",
			"unknown.bootTime": "no btime line", "outboxDropped": "7", "rack": "r12",
		}}
		resp, err := ag.Client.Heartbeat(ctx, api.HeartbeatRequest{AgentVersion: "v0.9.0", Facts: legacy})
		if err != nil {
			t.Fatalf("legacy heartbeat: %v", err)
		}
		if !resp.Has(api.FeatureTypedFacts) {
			t.Errorf("heartbeat answer features = %v, want %s", resp.Features, api.FeatureTypedFacts)
		}
		site, err := env.UserClient(env.AdminToken, "acme").GetSite(ctx, "store-1")
		if err != nil {
			t.Fatal(err)
		}
		want := api.HostFacts{Hostname: "edge-1", CPUModel: "Old CPU", AgentVersion: "v0.9.0", KVMError: "open /dev/kvm: permission denied",
			Unknown: map[string]string{"bootTime": "no btime line"}, OutboxDropped: 7, Labels: map[string]string{"rack": "r12"}}
		if site.Facts == nil {
			t.Fatal("site has no facts")
		}
		if d := cmp.Diff(want, *site.Facts); d != "" {
			t.Errorf("site facts from a legacy heartbeat (-want +got):\n%s", d)
		}

		typed := `{"protocolVersion":1,"agentVersion":"v1.0.0","vms":[],"facts":{"hostname":"edge-1","kvm":false,` +
			`"cpuModel":"New CPU","agentVersion":"v1.0.0","kvmError":"no /dev/kvm","unknown":{"disk":"statfs: EIO"},"outboxDropped":2}}`
		if code, body := env.Raw(&ag.Cert, "", http.MethodPost, api.PathAgentHB, []byte(typed)); code != http.StatusOK {
			t.Fatalf("typed heartbeat: %d %s", code, body)
		}
		site, _ = env.UserClient(env.AdminToken, "acme").GetSite(ctx, "store-1")
		want = api.HostFacts{Hostname: "edge-1", CPUModel: "New CPU", AgentVersion: "v1.0.0", KVMError: "no /dev/kvm",
			Unknown: map[string]string{"disk": "statfs: EIO"}, OutboxDropped: 2}
		if site.Facts == nil || !cmp.Equal(want, *site.Facts) {
			t.Errorf("site facts from a typed heartbeat = %+v, want %+v", site.Facts, want)
		}

		unknownField := strings.Replace(typed, `"cpuModel"`, `"cpuFlavour":"x","cpuModel"`, 1)
		code, body := env.Raw(&ag.Cert, "", http.MethodPost, api.PathAgentHB, []byte(unknownField))
		if code != http.StatusBadRequest || !strings.Contains(body, "cpuFlavour") {
			t.Errorf("heartbeat with an unknown fact field: %d %s, want 400 naming the field", code, body)
		}
	})
}

// olderControlPlane answers heartbeats as a control plane that predates the
// typed facts: its strict decoder refuses them, and it lists no features.
// Once rolledBack is set it behaves so; before, it is the real one.
type olderControlPlane struct {
	heartbeatLog
	mu         sync.Mutex
	rolledBack bool
	refused    int
}

func (o *olderControlPlane) Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	o.mu.Lock()
	old := o.rolledBack
	o.mu.Unlock()
	f := req.Facts
	if old && (f.CPUModel != "" || f.AgentVersion != "" || f.KVMError != "" || f.Unknown != nil || f.OutboxDropped != 0) {
		o.mu.Lock()
		o.refused++
		o.mu.Unlock()
		return api.HeartbeatResponse{}, &api.Error{Status: http.StatusBadRequest, Code: api.CodeBadRequest,
			Message: `malformed JSON: unknown field "agentVersion"`}
	}
	resp, err := o.heartbeatLog.Heartbeat(ctx, req)
	if old {
		resp.Features = nil
	}
	return resp, err
}

// TestHostFactsAfterAControlPlaneRollback: an agent that learnt the typed
// form goes back to the legacy labels when the control plane is replaced by
// one that refuses them, and keeps heartbeating.
func TestHostFactsAfterAControlPlaneRollback(t *testing.T) {
	env := startEdgeCP(t, false)
	e := newEdgeSite(t, env, "acme", "store-1")
	cp := &olderControlPlane{}
	e.wrap = func(c agent.ControlPlane) agent.ControlPlane { cp.ControlPlane = c; return cp }
	e.start()
	waitEdge(t, "a heartbeat in the typed form", 20*time.Second, func() (bool, string) {
		s := cp.sent()
		return len(s) > 0 && s[len(s)-1].AgentVersion != "", fmt.Sprint(len(s), " heartbeats")
	})
	cp.mu.Lock()
	cp.rolledBack = true
	cp.mu.Unlock()
	n := len(cp.sent())
	waitEdge(t, "legacy heartbeats to the older control plane", 20*time.Second, func() (bool, string) {
		s := cp.sent()
		return len(s) >= n+2, fmt.Sprint(len(s)-n, " accepted since the rollback")
	})
	for _, f := range cp.sent()[n:] {
		if f.AgentVersion != "" || f.Labels[api.LegacyLabelAgentVersion] != "test" {
			t.Errorf("heartbeat to the older control plane = %+v, want the legacy labels", f)
		}
	}
	cp.mu.Lock()
	refused := cp.refused
	cp.mu.Unlock()
	if refused > 1 {
		t.Errorf("%d heartbeats refused after the rollback, want at most the first", refused)
	}
}
