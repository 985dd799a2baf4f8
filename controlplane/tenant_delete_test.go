package controlplane_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
)

// TestDeleteTenantRevokesAgents: deleting a tenant through the API revokes
// its agents' certificates, so a still-running agent is refused, also once
// a tenant and site of the same names exist again.
func TestDeleteTenantRevokesAgents(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	env.NewTenant("acme")
	env.NewSite("acme", "s1")
	agent := env.Enroll("acme", "s1")
	if _, err := agent.Client.Heartbeat(t.Context(), api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion}); err != nil {
		t.Fatalf("heartbeat before the delete: %v", err)
	}
	if code, body := env.Raw(nil, env.AdminToken, http.MethodDelete, api.Path(api.PathTenant, "acme"), nil); code != http.StatusNoContent {
		t.Fatalf("DELETE tenant: %d %s", code, body)
	}
	// The same names come back (a new customer, or a re-onboarding).
	env.NewTenant("acme")
	env.NewSite("acme", "s1")
	_, err := agent.Client.Heartbeat(t.Context(), api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion})
	var ae *api.Error
	if !errors.As(err, &ae) || (ae.Status != http.StatusUnauthorized && ae.Status != http.StatusForbidden) {
		t.Fatalf("heartbeat of the deleted tenant's agent: %v, want it refused (401/403)", err)
	}
	// The audit log shows the revocation and the purge.
	events, err := env.Store().ListAudit(t.Context(), "acme", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var purged bool
	for _, ev := range events {
		if ev.Action == "tenant.purge" {
			purged = true
		}
	}
	if !purged {
		t.Errorf("no tenant.purge audit event")
	}
}
