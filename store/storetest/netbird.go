package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nkudo/nkudo/store"
)

func testNetBird(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	_, err := s.GetNetBirdIntegration(ctx, tenantA)
	wantErr(t, err, store.ErrNotFound)

	// The token credential must exist first, in the same tenant.
	in := store.NetBirdIntegration{Tenant: tenantA, URL: "https://api.netbird.io", Credential: "netbird"}
	_, err = s.PutNetBirdIntegration(ctx, admin, in)
	wantErr(t, err, store.ErrNotFound)
	must2(s.PutCredential(ctx, admin, store.Credential{Tenant: tenantB, Name: "netbird", Kind: store.CredentialToken, Host: "api.netbird.io"}, "nbp_b"))(t)
	_, err = s.PutNetBirdIntegration(ctx, admin, in)
	wantErr(t, err, store.ErrNotFound)
	must2(s.PutCredential(ctx, admin, store.Credential{Tenant: tenantA, Name: "netbird", Kind: store.CredentialToken, Host: "api.netbird.io"}, "nbp_a"))(t)

	for _, bad := range []store.NetBirdIntegration{
		{Tenant: tenantA, URL: "api.netbird.io", Credential: "netbird"},
		{Tenant: tenantA, URL: "ftp://api.netbird.io", Credential: "netbird"},
		{Tenant: tenantA, URL: "https://u:p@api.netbird.io", Credential: "netbird"},
		{Tenant: tenantA, URL: "https://api.netbird.io", Credential: "no/such"},
	} {
		_, err := s.PutNetBirdIntegration(ctx, admin, bad)
		wantErr(t, err, store.ErrInvalid)
	}

	got, err := s.PutNetBirdIntegration(ctx, admin, in)
	must(t, err)
	if got.URL != in.URL || got.Credential != "netbird" || got.CreatedAt.IsZero() {
		t.Fatalf("PutNetBirdIntegration = %+v", got)
	}
	in.URL = "https://netbird.example:33073"
	up, err := s.PutNetBirdIntegration(ctx, admin, in)
	must(t, err)
	if up.URL != in.URL || !up.CreatedAt.Equal(got.CreatedAt) {
		t.Errorf("replaced integration = %+v (was %+v)", up, got)
	}
	if g, err := s.GetNetBirdIntegration(ctx, tenantA); err != nil || g != up {
		t.Errorf("GetNetBirdIntegration = %+v, %v; want %+v", g, err, up)
	}
	_, err = s.GetNetBirdIntegration(ctx, tenantB)
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, s.DeleteNetBirdIntegration(ctx, admin, tenantB), store.ErrNotFound)

	must(t, s.DeleteNetBirdIntegration(ctx, admin, tenantA))
	_, err = s.GetNetBirdIntegration(ctx, tenantA)
	wantErr(t, err, store.ErrNotFound)
	if _, err := s.GetCredential(ctx, tenantA, "netbird"); err != nil {
		t.Errorf("deleting the integration removed its credential: %v", err)
	}
	events, err := s.ListAudit(ctx, tenantA, 0, 1000)
	must(t, err)
	seen := map[string]bool{}
	for _, e := range events {
		seen[e.Action] = true
	}
	for _, a := range []string{"netbird.create", "netbird.update", "netbird.delete"} {
		if !seen[a] {
			t.Errorf("no audit event %s", a)
		}
	}
}

const nbKey = "A6160B7E-FCF0-48FA-9354-CA4A61142761"

func testNetBirdPeers(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	_, err := s.GetNetBirdPeer(ctx, tenantA, "edge-1")
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, s.PutNetBirdPeer(ctx, store.NetBirdPeer{Tenant: "nosuch", Site: "edge-1"}), store.ErrNotFound)

	in := store.NetBirdPeer{Tenant: tenantA, Site: "edge-1", KeyID: "sk1", SetupKey: nbKey, KeyGroups: []string{"a", "b"}, Groups: []string{"a", "b"}}
	must(t, s.PutNetBirdPeer(ctx, in))
	must(t, s.PutNetBirdPeer(ctx, store.NetBirdPeer{Tenant: tenantA, Site: "edge-2", PeerID: "pe2", LastChange: "+a", LastError: "boom"}))
	got, err := s.GetNetBirdPeer(ctx, tenantA, "edge-1")
	must(t, err)
	if d := cmp.Diff(in, got, cmpopts.IgnoreFields(store.NetBirdPeer{}, "UpdatedAt")); d != "" || got.UpdatedAt.IsZero() {
		t.Errorf("GetNetBirdPeer (-want +got):\n%s", d)
	}
	list, err := s.ListNetBirdPeers(ctx, tenantA)
	must(t, err)
	if len(list) != 2 || list[0].Site != "edge-1" || list[1].PeerID != "pe2" || list[1].Groups == nil {
		t.Errorf("ListNetBirdPeers = %+v", list)
	}
	if l, err := s.ListNetBirdPeers(ctx, tenantB); err != nil || len(l) != 0 {
		t.Errorf("other tenant's peers = %+v, %v", l, err)
	}

	if raw, ok := s.(Raw); ok {
		// Not in clear: a row matching the key in clear would be deleted.
		must(t, raw.ExecRaw(ctx, `DELETE FROM netbird_peers WHERE setup_key LIKE '%`+nbKey[:8]+`%'`))
		if _, err := s.GetNetBirdPeer(ctx, tenantA, "edge-1"); err != nil {
			t.Fatalf("the setup key is stored in clear: %v", err)
		}
		// Sealed to its row: moved to another site's row it does not open.
		must(t, raw.ExecRaw(ctx, `UPDATE netbird_peers SET setup_key = (SELECT setup_key FROM netbird_peers WHERE tenant = 'acme' AND site = 'edge-1') WHERE site = 'edge-2'`))
		if _, err := s.GetNetBirdPeer(ctx, tenantA, "edge-2"); err == nil {
			t.Error("a setup key moved to another site's row opened")
		}
	}

	// The key is cleared once used.
	in.KeyID, in.SetupKey, in.KeyGroups, in.PeerID = "", "", nil, "pe1"
	must(t, s.PutNetBirdPeer(ctx, in))
	if got, err := s.GetNetBirdPeer(ctx, tenantA, "edge-1"); err != nil || got.SetupKey != "" || got.PeerID != "pe1" {
		t.Errorf("after the join = %+v, %v", got, err)
	}
	must(t, s.DeleteNetBirdPeer(ctx, tenantA, "edge-1"))
	wantErr(t, s.DeleteNetBirdPeer(ctx, tenantA, "edge-1"), store.ErrNotFound)
}

// testHeartbeatNetBirdKey: a heartbeat answers with its own site's pending
// setup key, opened, and with none once it is used, for another site or
// tenant, or when the sealed key does not open (the heartbeat is still
// recorded).
func testHeartbeatNetBirdKey(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	beat := func(tenant, site string) store.HeartbeatResult {
		t.Helper()
		res, err := s.RecordHeartbeat(ctx, tenant, site, store.Heartbeat{Time: epoch})
		must(t, err)
		return res
	}
	if k := beat(tenantA, siteA).NetBirdSetupKey; k != "" {
		t.Errorf("heartbeat with no peer row: key %q", k.Reveal())
	}
	must(t, s.PutNetBirdPeer(ctx, store.NetBirdPeer{Tenant: tenantA, Site: siteA, KeyID: "sk1", SetupKey: nbKey}))
	must(t, s.PutNetBirdPeer(ctx, store.NetBirdPeer{Tenant: tenantA, Site: siteB, PeerID: "joined"}))
	if k := beat(tenantA, siteA).NetBirdSetupKey; k.Reveal() != nbKey {
		t.Errorf("heartbeat with a pending key: key %q, want %q", k.Reveal(), nbKey)
	}
	for _, o := range [][2]string{{tenantA, siteB}, {tenantB, siteA}} {
		if k := beat(o[0], o[1]).NetBirdSetupKey; k != "" {
			t.Errorf("heartbeat of %s/%s got another site's key %q", o[0], o[1], k.Reveal())
		}
	}
	if raw, ok := s.(Raw); ok {
		// Sealed to its row: moved to another site's row it does not open,
		// and that site's heartbeat is recorded without a key.
		must(t, raw.ExecRaw(ctx, `UPDATE netbird_peers SET setup_key = (SELECT setup_key FROM netbird_peers WHERE tenant = '`+tenantA+`' AND site = '`+siteA+`')
			WHERE tenant = '`+tenantA+`' AND site = '`+siteB+`'`))
		res, err := s.RecordHeartbeat(ctx, tenantA, siteB, store.Heartbeat{Time: epoch.Add(time.Minute)})
		must(t, err)
		if res.NetBirdSetupKey != "" {
			t.Errorf("a key moved to another site's row opened: %q", res.NetBirdSetupKey.Reveal())
		}
		st, err := s.GetSite(ctx, tenantA, siteB)
		must(t, err)
		if !st.LastHeartbeat.Equal(epoch.Add(time.Minute)) {
			t.Errorf("heartbeat with an unopenable key not recorded: last heartbeat %v", st.LastHeartbeat)
		}
	}
	// Used: cleared, and the heartbeat carries nothing.
	must(t, s.PutNetBirdPeer(ctx, store.NetBirdPeer{Tenant: tenantA, Site: siteA, PeerID: "pe1"}))
	if k := beat(tenantA, siteA).NetBirdSetupKey; k != "" {
		t.Errorf("heartbeat after the key was used: key %q", k.Reveal())
	}
}
