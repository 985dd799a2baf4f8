package netbird_test

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/netbird"
)

var cliBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "netbird-cli")
	if err != nil {
		panic(err)
	}
	cliBin = filepath.Join(dir, "netbird")
	if out, err := exec.Command("go", "build", "-o", cliBin, "github.com/nkudo/nkudo/tests/fakes/netbird").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// edge is one site's host running the fake netbird CLI.
type edge struct {
	t            *testing.T
	dir, url, ca string
}

func newEdge(t *testing.T, url string, cert []byte) *edge {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &edge{t: t, dir: dir, url: url, ca: ca}
}

func (e *edge) run(args ...string) (string, error) {
	cmd := exec.CommandContext(e.t.Context(), cliBin, args...)
	cmd.Env = append(os.Environ(), "NBFAKE_STATE_DIR="+e.dir, "NBFAKE_CA_FILE="+e.ca, "NBFAKE_HOSTNAME=edge")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// up joins with key and answers the NetBird IP the agent would report.
func (e *edge) up(key netbird.Secret) string {
	e.t.Helper()
	if out, err := e.run("up", "--setup-key", key.Reveal(), "--management-url", e.url); err != nil {
		e.t.Fatalf("netbird up: %v: %s", err, out)
	}
	out, err := e.run("status", "--json")
	if err != nil {
		e.t.Fatal(err)
	}
	var st struct {
		IP string `json:"netbirdIp"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatal(err)
	}
	ip, _, _ := strings.Cut(st.IP, "/")
	return ip
}

func TestSiteJoinsAndFollowsGroups(t *testing.T) {
	srv, ts, c := start(t)
	ctx := t.Context()
	var st netbird.SiteState

	// A new site: a one-off key for its groups, named after tenant and site.
	st, res, err := c.ReconcileSite(ctx, "acme", "edge-1", []string{"ot-gateways"}, "", st)
	if err != nil || !res.Minted || res.Joined || st.Key == "" {
		t.Fatalf("first reconcile: %+v %+v %v", st, res, err)
	}
	// Until the agent joined, the key is kept, not re-minted.
	st2, res, err := c.ReconcileSite(ctx, "acme", "edge-1", []string{"ot-gateways"}, "", st)
	if err != nil || res.Minted || st2.KeyID != st.KeyID {
		t.Fatalf("second reconcile before join: %+v %v", res, err)
	}

	ip := newEdge(t, ts.URL, ts.Certificate().Raw).up(st.Key)
	st, res, err = c.ReconcileSite(ctx, "acme", "edge-1", []string{"ot-gateways"}, ip, st)
	if err != nil || !res.Joined || !res.Change.Empty() || st.PeerID == "" {
		t.Fatalf("reconcile after join: %+v %+v %v", st, res, err)
	}
	if d := cmp.Diff([]string{"All", "ot-gateways"}, srv.PeerGroups(st.PeerID)); d != "" {
		t.Errorf("peer groups (-want +got):\n%s", d)
	}
	if total, _ := srv.KeyCount(); total != 0 || st.KeyID != "" || st.Key != "" {
		t.Errorf("the used key was not deleted: %d keys, state %+v", total, st)
	}

	// A group added in git: membership follows, no new key.
	st, res, err = c.ReconcileSite(ctx, "acme", "edge-1", []string{"ot-gateways", "cameras"}, ip, st)
	if err != nil || res.Change.String() != "+cameras" || res.Drift || res.Minted {
		t.Fatalf("group added: %+v %v", res, err)
	}
	// An edit in the NetBird UI is drift: undone and reported.
	srv.SetPeerGroups(st.PeerID, "ot-gateways", "rogue")
	st, res, err = c.ReconcileSite(ctx, "acme", "edge-1", []string{"ot-gateways", "cameras"}, ip, st)
	if err != nil || !res.Drift || res.Change.String() != "+cameras -rogue" {
		t.Fatalf("drift: %+v %v", res, err)
	}
	if d := cmp.Diff([]string{"All", "cameras", "ot-gateways"}, srv.PeerGroups(st.PeerID)); d != "" {
		t.Errorf("peer groups after drift (-want +got):\n%s", d)
	}

	// Deleting the site removes its peer.
	if err := c.DeleteSite(ctx, st); err != nil {
		t.Fatal(err)
	}
	if len(srv.Peers()) != 0 {
		t.Errorf("peers after site deletion: %v", srv.Peers())
	}
}

func TestSiteKeyReplaced(t *testing.T) {
	srv, _, c := start(t)
	var (
		mu  sync.Mutex
		now = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	)
	srv.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ctx := t.Context()
	st, _, err := c.ReconcileSite(ctx, "acme", "edge-1", []string{"a"}, "", netbird.SiteState{})
	if err != nil {
		t.Fatal(err)
	}
	// Groups changed before the agent joined: the key is replaced.
	st2, res, err := c.ReconcileSite(ctx, "acme", "edge-1", []string{"a", "b"}, "", st)
	if err != nil || !res.Minted || st2.KeyID == st.KeyID || st2.Key == st.Key {
		t.Fatalf("groups changed: %+v %v", res, err)
	}
	// An expired key is replaced too; the old ones are gone.
	mu.Lock()
	now = now.Add(netbird.KeyLifetime + time.Minute)
	mu.Unlock()
	st3, res, err := c.ReconcileSite(ctx, "acme", "edge-1", []string{"a", "b"}, "", st2)
	if err != nil || !res.Minted || st3.KeyID == st2.KeyID {
		t.Fatalf("key expired: %+v %v", res, err)
	}
	if total, valid := srv.KeyCount(); total != 1 || valid != 1 {
		t.Errorf("keys: %d total, %d valid; want only the new one", total, valid)
	}
	if _, _, err := c.ReconcileSite(ctx, "acme", "edge-1", []string{"All"}, "", st3); err == nil {
		t.Error("a Site in group All was accepted")
	}
}

func TestSiteOutage(t *testing.T) {
	srv, _, c := start(t)
	srv.Fail(-1, 0)
	st := netbird.SiteState{PeerID: "pe1", Groups: []string{"a"}}
	got, _, err := c.ReconcileSite(t.Context(), "acme", "edge-1", []string{"a", "b"}, "100.90.0.2", st)
	if !errors.Is(err, netbird.ErrUnavailable) {
		t.Fatalf("outage: %v, want ErrUnavailable", err)
	}
	if d := cmp.Diff(st, got); d != "" {
		t.Errorf("state changed by a failed reconcile (-want +got):\n%s", d)
	}
}

// TestSiteUsedKeyWaitsForReport: a key just used means the agent joined;
// no new key until the grace has passed without the agent reporting.
func TestSiteUsedKeyWaitsForReport(t *testing.T) {
	_, ts, c := start(t)
	var (
		mu  sync.Mutex
		now = time.Now()
	)
	c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ctx := t.Context()
	st, _, err := c.ReconcileSite(ctx, "acme", "edge-1", []string{"a"}, "", netbird.SiteState{})
	if err != nil {
		t.Fatal(err)
	}
	join(t, ts, st.Key, "pub1")
	st2, res, err := c.ReconcileSite(ctx, "acme", "edge-1", []string{"a"}, "", st)
	if err != nil || res.Minted || st2.KeyID != st.KeyID {
		t.Fatalf("right after the join: %+v %v; want the used key kept", res, err)
	}
	mu.Lock()
	now = now.Add(netbird.UsedKeyGrace + time.Second)
	mu.Unlock()
	if _, res, err := c.ReconcileSite(ctx, "acme", "edge-1", []string{"a"}, "", st2); err != nil || !res.Minted {
		t.Fatalf("after the grace: %+v %v; want a new key", res, err)
	}
}
