package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	agentnetbird "github.com/nkudo/nkudo/agent/netbird"
	"github.com/nkudo/nkudo/controlplane/nbsync"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
	nbmgmt "github.com/nkudo/nkudo/tests/fakes/netbird-management"
)

// nbWorld is a GitOps control plane whose tenant acme has a NetBird
// integration with the management API fake, and the sync beside the loop.
type nbWorld struct {
	*gitops
	nb   *nbmgmt.Server
	ts   *httptest.Server
	logs *syncBuffer // the edge agent's and the sync's log lines
	// cliDir is the fake netbird CLI's state of the edge site.
	cliDir string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type teeLog struct {
	t testing.TB
	b *syncBuffer
}

func (w teeLog) Write(p []byte) (int, error) {
	w.b.Write(p)
	return edgeLogWriter{w.t}.Write(p)
}

// startNetBird starts the world; with edge, site edge-1 runs the real
// agent with the fake netbird CLI (not started yet: call w.edge.start()).
func startNetBird(t *testing.T, edge bool) *nbWorld {
	t.Helper()
	cfg := gitopsConfig{}
	if edge {
		cfg.edgeSite = "edge-1"
	}
	w := &nbWorld{gitops: startGitOps(t, cfg), nb: &nbmgmt.Server{}, logs: &syncBuffer{}}
	w.ts = httptest.NewTLSServer(w.nb)
	t.Cleanup(w.ts.Close)
	ctx := t.Context()
	st := w.env.Store()
	if _, err := st.PutCredential(ctx, store.Actor{Kind: "user", ID: "test"}, store.Credential{Tenant: "acme", Name: "netbird",
		Kind: store.CredentialToken, Host: strings.TrimPrefix(w.ts.URL, "https://")}, nbmgmt.DefaultToken); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutNetBirdIntegration(ctx, store.Actor{Kind: "user", ID: "test"}, store.NetBirdIntegration{Tenant: "acme", URL: w.ts.URL, Credential: "netbird"}); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(w.ts.Certificate())
	client := egress.Policy{Allow: egress.Loopback()}.HTTPClient(10 * time.Second)
	client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: roots}
	syncer := nbsync.New(nbsync.Options{Store: st, HTTP: client, Interval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(teeLog{t, w.logs}, nil))})
	sctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { syncer.Run(sctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	if edge {
		dir := t.TempDir()
		buildEdgeBinary(t, dir, "tests/fakes/netbird", "netbird")
		w.cliDir = t.TempDir()
		ca := filepath.Join(w.cliDir, "ca.pem")
		if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: w.ts.Certificate().Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
		w.edge.netbird = &agentnetbird.Client{Binary: filepath.Join(dir, "netbird"),
			Env: []string{"NBFAKE_STATE_DIR=" + w.cliDir, "NBFAKE_CA_FILE=" + ca, "NBFAKE_HOSTNAME=edge-1"}}
		w.edge.logger = slog.New(slog.NewTextHandler(teeLog{t, w.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return w
}

// site is a Site manifest with NetBird groups.
func nbSite(name string, groups ...string) string {
	return gittest.Site(name)[:strings.Index(gittest.Site(name), "spec:")] + "spec:\n  netbird:\n    groups: [" + strings.Join(groups, ", ") + "]\n"
}

// peerGroups is the groups of the site's only peer (nil: none yet).
func (w *nbWorld) peerGroups() (string, []string) {
	peers := w.nb.Peers()
	if len(peers) != 1 {
		return "", nil
	}
	return peers[0], w.nb.PeerGroups(peers[0])
}

// upCalls counts the `netbird up` runs of the edge.
func (w *nbWorld) upCalls() int {
	b, _ := os.ReadFile(filepath.Join(w.cliDir, "calls.log"))
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "up ") {
			n++
		}
	}
	return n
}

// noKeyLeaked checks every minted key against the logs, the CLI's call
// log, the user API's answers and the plans.
func (w *nbWorld) noKeyLeaked() {
	w.t.Helper()
	keys := w.nb.MintedKeys()
	if len(keys) == 0 {
		w.t.Fatal("no setup key was minted")
	}
	calls, _ := os.ReadFile(filepath.Join(w.cliDir, "calls.log"))
	sites, _ := w.acme.Client.ListSites(w.t.Context())
	sitesJSON, _ := json.Marshal(sites)
	plansJSON, _ := json.Marshal(w.plans())
	for _, k := range keys {
		for what, text := range map[string]string{"logs": w.logs.String(), "CLI call log": string(calls), "sites API": string(sitesJSON), "plans": string(plansJSON)} {
			if strings.Contains(text, k) {
				w.t.Errorf("a setup key appears in the %s", what)
			}
		}
	}
}

// TestNetBirdGroupsFromManifest: a commit with groups → a key minted with
// those group IDs → the agent joins with it → its peer is in exactly
// those groups, and the used key is gone.
func TestNetBirdGroupsFromManifest(t *testing.T) {
	w := startNetBird(t, true)
	w.git.Write("manifests/edge-1.yaml", nbSite("edge-1", "ot-gateways", "cameras"))
	c1 := w.git.Commit("edge-1: join ot-gateways and cameras")
	w.push("d1", "", c1)
	eventually(t, "a setup key minted", func() bool { total, _ := w.nb.KeyCount(); return total == 1 })
	// The key exists in NetBird a moment before the sync records it as
	// pending for the site; nothing joins until the agent starts.
	eventually(t, "the site's key pending", func() bool {
		site, err := w.acme.Client.GetSite(t.Context(), "edge-1")
		return err == nil && site.NetBirdSync != nil && site.NetBirdSync.KeyPending
	})
	w.edge.start()
	eventually(t, "the peer in the Site's groups", func() bool {
		_, g := w.peerGroups()
		return slices.Equal(g, []string{"All", "cameras", "ot-gateways"})
	})
	eventually(t, "the used key deleted", func() bool { total, _ := w.nb.KeyCount(); return total == 0 })
	peer, _ := w.peerGroups()
	// The row is written after the key is deleted.
	eventually(t, "the peer and no key stored", func() bool {
		row, err := w.env.Store().GetNetBirdPeer(t.Context(), "acme", "edge-1")
		return err == nil && row.PeerID == peer && row.SetupKey == "" && row.KeyID == ""
	})
	eventually(t, "the site shows its peer", func() bool {
		site, err := w.acme.Client.GetSite(t.Context(), "edge-1")
		return err == nil && site.NetBirdSync != nil && site.NetBirdSync.PeerID == peer && !site.NetBirdSync.KeyPending &&
			slices.Equal(site.NetBirdSync.Groups, []string{"cameras", "ot-gateways"}) && site.Facts != nil && site.Facts.NetBird.ManagementConnected
	})
	w.noKeyLeaked()
}

// TestNetBirdGroupChangeWithoutRestart: a group added in git changes the
// membership of the running peer; the agent keeps running and does not
// join again. A peer removed from the account gets a new key through the
// heartbeat and rejoins, still without a restart.
func TestNetBirdGroupChangeWithoutRestart(t *testing.T) {
	w := startNetBird(t, true)
	w.git.Write("manifests/edge-1.yaml", nbSite("edge-1", "ot-gateways"))
	c1 := w.git.Commit("edge-1: join ot-gateways")
	w.push("d1", "", c1)
	w.edge.start()
	eventually(t, "the peer in ot-gateways", func() bool {
		_, g := w.peerGroups()
		return slices.Equal(g, []string{"All", "ot-gateways"})
	})
	ups := w.upCalls()

	w.git.Write("manifests/edge-1.yaml", nbSite("edge-1", "ot-gateways", "cameras"))
	c2 := w.git.Commit("edge-1: also cameras")
	w.push("d2", c1, c2)
	eventually(t, "the peer also in cameras", func() bool {
		_, g := w.peerGroups()
		return slices.Equal(g, []string{"All", "cameras", "ot-gateways"})
	})
	// The commit's plan summary names the change like a VM change.
	eventually(t, "nkudo/plan of "+c2[:12]+" names the group change", func() bool {
		st, desc := w.forgeState(c2, "nkudo/plan")
		return st == "success" && desc == "1 site: netbird groups +cameras"
	})
	if n := w.upCalls(); n != ups {
		calls, _ := os.ReadFile(filepath.Join(w.cliDir, "calls.log"))
		t.Errorf("netbird up ran %d more times for a group change; calls:\n%s", n-ups, calls)
	}
	if total, _ := w.nb.KeyCount(); total != 0 {
		t.Errorf("%d setup keys for a group change, want none", total)
	}

	// The peer is deleted in NetBird: a new key comes with a heartbeat.
	old, _ := w.peerGroups()
	deletePeer(t, w, old)
	eventually(t, "the edge rejoined as a new peer", func() bool {
		p, g := w.peerGroups()
		return p != "" && p != old && slices.Equal(g, []string{"All", "cameras", "ot-gateways"})
	})
	select {
	case err := <-w.edge.done:
		t.Fatalf("the agent stopped: %v", err)
	default:
	}
	w.noKeyLeaked()
}

// deletePeer removes a peer through the API, as an admin in the UI would.
func deletePeer(t *testing.T, w *nbWorld, id string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodDelete, w.ts.URL+"/api/peers/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Token "+nbmgmt.DefaultToken)
	resp, err := w.ts.Client().Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("delete peer: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestNetBirdDriftCorrected: membership edited in NetBird is restored and
// the change recorded.
func TestNetBirdDriftCorrected(t *testing.T) {
	w := startNetBird(t, true)
	w.git.Write("manifests/edge-1.yaml", nbSite("edge-1", "ot-gateways"))
	c1 := w.git.Commit("edge-1: join ot-gateways")
	w.push("d1", "", c1)
	w.edge.start()
	eventually(t, "the peer in ot-gateways", func() bool {
		_, g := w.peerGroups()
		return slices.Equal(g, []string{"All", "ot-gateways"})
	})
	peer, _ := w.peerGroups()
	eventually(t, "the control plane found the peer", func() bool {
		row, err := w.env.Store().GetNetBirdPeer(t.Context(), "acme", "edge-1")
		return err == nil && row.PeerID == peer
	})
	w.nb.SetPeerGroups(peer, "rogue")
	eventually(t, "membership restored", func() bool {
		return slices.Equal(w.nb.PeerGroups(peer), []string{"All", "ot-gateways"})
	})
	eventually(t, "the drift reported", func() bool {
		return strings.Contains(w.logs.String(), "netbird membership drifted and was restored")
	})
	// The log line comes before the row is written.
	eventually(t, "the change recorded", func() bool {
		row, err := w.env.Store().GetNetBirdPeer(t.Context(), "acme", "edge-1")
		return err == nil && row.LastChange == "+ot-gateways -rogue"
	})

	// Deleting the site removes its peer from the account.
	w.edge.stop()
	if err := w.acme.Client.DeleteSite(t.Context(), "edge-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted site's peer removed", func() bool { return len(w.nb.Peers()) == 0 })
	eventually(t, "its state forgotten", func() bool {
		_, err := w.env.Store().GetNetBirdPeer(t.Context(), "acme", "edge-1")
		return errors.Is(err, store.ErrNotFound)
	})
}

// TestNetBirdOutageDoesNotBlockVMs: with the management API failing, VM
// plans still apply; NetBird is retried and the failure recorded, and
// the site joins once the API is back.
func TestNetBirdOutageDoesNotBlockVMs(t *testing.T) {
	w := startNetBird(t, false)
	w.nb.Fail(-1, 0)
	w.git.Write("manifests/site-0001.yaml", nbSite("site-0001", "ot-gateways")+"---\n"+gittest.VM("site-0001", "vm-01", "Running", 1))
	c1 := w.git.Commit("site-0001: a VM and NetBird")
	w.startAgent("site-0001")
	w.push("d1", "", c1)
	w.waitApplied(c1)
	eventually(t, "the NetBird failure recorded", func() bool {
		row, err := w.env.Store().GetNetBirdPeer(t.Context(), "acme", "site-0001")
		return err == nil && strings.Contains(row.LastError, "500")
	})
	calls := len(w.nb.Calls())
	eventually(t, "retries", func() bool { return len(w.nb.Calls()) > calls })
	w.nb.Fail(0, 0)
	eventually(t, "a key minted once the API is back", func() bool { total, _ := w.nb.KeyCount(); return total == 1 })
	eventually(t, "the recovery recorded", func() bool {
		row, err := w.env.Store().GetNetBirdPeer(t.Context(), "acme", "site-0001")
		return err == nil && row.LastError == "" && row.KeyID != ""
	})
	if d := cmp.Diff([]string{"All", "ot-gateways"}, groupNames(w.nb)); d != "" {
		t.Errorf("groups (-want +got):\n%s", d)
	}
}

func groupNames(s *nbmgmt.Server) []string {
	var out []string
	for _, g := range s.Groups() {
		out = append(out, g.Name)
	}
	return out
}
