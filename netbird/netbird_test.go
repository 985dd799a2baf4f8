package netbird_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/netbird"
	nbmgmt "github.com/nkudo/nkudo/tests/fakes/netbird-management"
)

func start(t *testing.T) (*nbmgmt.Server, *httptest.Server, *netbird.Client) {
	t.Helper()
	srv := &nbmgmt.Server{}
	ts := httptest.NewTLSServer(srv)
	t.Cleanup(ts.Close)
	return srv, ts, &netbird.Client{URL: ts.URL, Token: nbmgmt.DefaultToken, HTTP: ts.Client()}
}

// join registers a peer with key, as the netbird CLI does at the fake.
func join(t *testing.T, ts *httptest.Server, key netbird.Secret, pub string) string {
	t.Helper()
	b, _ := json.Marshal(nbmgmt.LoginRequest{SetupKey: key.Reveal(), PublicKey: pub, Hostname: "edge-" + pub})
	resp, err := ts.Client().Post(ts.URL+"/fake/login", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out nbmgmt.LoginResponse
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
		t.Fatalf("join: status %d", resp.StatusCode)
	}
	return out.PeerID
}

func TestKeyJoinsPeerToResolvedGroups(t *testing.T) {
	srv, ts, c := start(t)
	ctx := t.Context()
	if _, err := c.CreateGroup(ctx, "existing"); err != nil {
		t.Fatal(err)
	}
	ids, err := c.ResolveGroups(ctx, []string{"ot-gateways", "existing"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.ResolveGroups(ctx, []string{"ot-gateways", "existing"})
	if err != nil || !cmp.Equal(ids, again) {
		t.Fatalf("second resolve = %v, %v; want the same IDs %v", again, err, ids)
	}
	if n := len(srv.Groups()); n != 3 {
		t.Errorf("account has %d groups, want All and two", n)
	}
	if _, err := c.ResolveGroups(ctx, []string{"All"}); err == nil {
		t.Error("resolving All succeeded")
	}

	k, err := c.CreateSetupKey(ctx, "acme/edge-1", ids, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if k.UsageLimit != 1 || k.State != "valid" || !cmp.Equal(k.AutoGroups, ids) {
		t.Errorf("new key = %+v", k.SetupKey)
	}
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%+v %#v", k, k)} {
		if strings.Contains(s, k.Key.Reveal()) {
			t.Fatalf("printing the new key shows it: %s", s)
		}
	}
	peer := join(t, ts, k.Key, "pub1")
	if d := cmp.Diff([]string{"All", "existing", "ot-gateways"}, srv.PeerGroups(peer)); d != "" {
		t.Errorf("peer groups (-want +got):\n%s", d)
	}
	got, err := c.SetupKey(ctx, k.ID)
	if err != nil || got.State != "overused" {
		t.Errorf("used key = %+v, %v; want overused", got, err)
	}
	if err := c.DeleteSetupKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSetupKey(ctx, k.ID); err != nil {
		t.Errorf("deleting a deleted key: %v", err)
	}
	if err := c.DeletePeer(ctx, peer); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Peer(ctx, peer); !errors.Is(err, netbird.ErrNotFound) {
		t.Errorf("deleted peer: %v, want ErrNotFound", err)
	}
}

func TestSetPeerGroups(t *testing.T) {
	srv, ts, c := start(t)
	ctx := t.Context()
	ids, err := c.ResolveGroups(ctx, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.CreateSetupKey(ctx, "k", ids, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	peer := join(t, ts, k.Key, "pub1")
	other := join(t, ts, mustKey(t, c, ids), "pub2")

	ch, err := c.SetPeerGroups(ctx, peer, []string{"b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(netbird.Change{Added: []string{"c"}, Removed: []string{"a"}}, ch); d != "" {
		t.Errorf("change (-want +got):\n%s", d)
	}
	if ch.String() != "+c -a" {
		t.Errorf("change renders %q", ch)
	}
	if d := cmp.Diff([]string{"All", "b", "c"}, srv.PeerGroups(peer)); d != "" {
		t.Errorf("peer groups (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"All", "a", "b"}, srv.PeerGroups(other)); d != "" {
		t.Errorf("the other peer's groups changed (-want +got):\n%s", d)
	}

	// Drift made in the UI is undone; a second run changes nothing.
	srv.SetPeerGroups(peer, "a", "rogue")
	ch, err = c.SetPeerGroups(ctx, peer, []string{"b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if ch.String() != "+b +c -a -rogue" {
		t.Errorf("drift change %q", ch)
	}
	if ch, err = c.SetPeerGroups(ctx, peer, []string{"b", "c"}); err != nil || !ch.Empty() {
		t.Errorf("re-run: %v, %v; want no change", ch, err)
	}
	if _, err := c.SetPeerGroups(ctx, peer, []string{"All"}); err == nil {
		t.Error("assigning All succeeded")
	}
}

func mustKey(t *testing.T, c *netbird.Client, ids []string) netbird.Secret {
	t.Helper()
	k, err := c.CreateSetupKey(t.Context(), "k2", ids, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return k.Key
}

func TestErrors(t *testing.T) {
	srv, ts, c := start(t)
	ctx := t.Context()
	bad := &netbird.Client{URL: ts.URL, Token: "nbp_secret_wrong_token", HTTP: ts.Client()}
	_, err := bad.Groups(ctx)
	if !errors.Is(err, netbird.ErrUnauthorized) || strings.Contains(err.Error(), "nbp_secret") {
		t.Errorf("wrong token: %v", err)
	}
	srv.ExpireToken(true)
	if _, err := c.Groups(ctx); !errors.Is(err, netbird.ErrUnauthorized) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
	srv.ExpireToken(false)
	srv.Fail(1, 0)
	if _, err := c.Peers(ctx); !errors.Is(err, netbird.ErrUnavailable) {
		t.Errorf("500: %v, want ErrUnavailable", err)
	}
	var e *netbird.Error
	if _, err := c.CreateGroup(ctx, "All"); !errors.As(err, &e) || e.Status != http.StatusUnprocessableEntity {
		t.Errorf("creating All: %v", err)
	}
	if _, err := c.Peers(ctx); err != nil {
		t.Errorf("after the fault: %v", err)
	}
}
