// Package storetest is the conformance suite every store.Store backend
// runs: Run for behaviour, Bench for the hot paths. A backend that can run
// raw SQL (the Raw interface) also gets the audit tamper-detection tests.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// Raw is implemented by backends that let tests edit rows behind the
// store's back (to prove that VerifyAudit notices).
type Raw interface {
	ExecRaw(ctx context.Context, query string, args ...any) error
}

// Open returns a fresh, empty, migrated store; the callee registers its
// Close with t.Cleanup.
type Open func(t *testing.T) store.Store

// Run runs the whole suite; every subtest opens its own store.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"Tenants", testTenants},
		{"Repositories", testRepositories},
		{"RepositoryVerifyPolicy", testRepositoryVerify},
		{"SiteDesired", testSiteDesired},
		{"DesiredState", testDesiredState},
		{"RecordSitePlans", testRecordSitePlans},
		{"Credentials", testCredentials},
		{"NetBird", testNetBird},
		{"NetBirdPeers", testNetBirdPeers},
		{"APITokens", testAPITokens},
		{"EnrollmentTokens", testEnrollmentTokens},
		{"EnrollmentTokenSingleUseConcurrent", testEnrollmentConcurrent},
		{"Sites", testSites},
		{"SiteCertificates", testSiteCertificates},
		{"RevokeRenewRace", testRevokeRenewRace},
		{"Heartbeat", testHeartbeat},
		{"HeartbeatConcurrent", testHeartbeatConcurrent},
		{"HeartbeatNetBirdKey", testHeartbeatNetBirdKey},
		{"PlanStoreAndDedupe", testPlanDedupe},
		{"PlanDedupeConcurrent", testPlanDedupeConcurrent},
		{"PlanSupersession", testPlanSupersession},
		{"PlanSupersedeActive", testPlanSupersedeActive},
		{"ActionLifecycle", testActionLifecycle},
		{"ActionFailure", testActionFailure},
		{"RecordActionResults", testRecordActionResults},
		{"StartActions", testStartActions},
		{"PrunePlans", testPrunePlans},
		{"Logs", testLogs},
		{"CommitStatuses", testCommitStatuses},
		{"CommitsWithPrefix", testCommitsWithPrefix},
		{"Previews", testPreviews},
		{"PreviewState", testPreviewState},
		{"WebhookDeliveries", testDeliveries},
		{"WebhookPayloads", testPayloads},
		{"LogBounds", testLogBounds},
		{"Audit", testAudit},
		{"AuditConcurrent", testAuditConcurrent},
		{"LeaseExclusive", testLeaseExclusive},
		{"LeaseExpiryHandover", testLeaseHandover},
		{"LeaseFence", testLeaseFence},
		{"ReconcileRequests", testReconcileRequests},
		{"WakeUp", testWakeUp},
		{"TenantScoping", testTenantScoping},
		{"TenantPurge", testTenantPurge},
		{"Close", testClose},
		{"Images", testImages},
		{"ImageQuotaConcurrent", testImageQuotaConcurrent},
		{"RecentCommitStatuses", testRecentCommitStatuses},
		{"FleetWakeUp", testFleetWakeUp},
		{"UISessions", testUISessions},
		{"UISignInCodes", testUISignInCodes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
	t.Run("AuditTamper", func(t *testing.T) {
		t.Parallel()
		testAuditTamper(t, open)
	})
	t.Run("RecordSitePlansBatch", func(t *testing.T) {
		t.Parallel()
		testRecordSitePlansBatch(t, open)
	})
	t.Run("SealedRows", func(t *testing.T) {
		t.Parallel()
		testSealedRows(t, open)
	})
}

// Fixture names used across the suite.
const (
	tenantA = "acme"
	tenantB = "globex"
	siteA   = "edge-1"
	siteB   = "edge-2"
)

var (
	admin  = store.Actor{Kind: store.ActorAdmin, ID: "test"}
	agent  = store.Actor{Kind: store.ActorAgent, ID: tenantA + "/" + siteA}
	epoch  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	second = time.Second
)

// seed creates tenants A and B, each with sites edge-1 and edge-2.
func seed(t testing.TB, s store.Store) {
	t.Helper()
	ctx := t.Context()
	for _, tn := range []string{tenantA, tenantB} {
		if _, err := s.CreateTenant(ctx, admin, store.Tenant{ID: tn, Name: tn + " inc"}); err != nil {
			t.Fatalf("create tenant: %v", err)
		}
		for _, site := range []string{siteA, siteB} {
			if _, err := s.CreateSite(ctx, admin, tn, site); err != nil {
				t.Fatalf("create site: %v", err)
			}
		}
	}
}

// plan builds a plan for tenant/site with one create action per VM name;
// the IDs are derived from tag so different tags give different plans.
func plan(tenant, site, tag string, vms ...string) model.Plan {
	p := model.Plan{Tenant: tenant, Site: site, Commit: "c-" + tag, InventoryVersion: 1}
	id := tenant + "/" + site + "/" + tag
	for _, vm := range vms {
		spec := &model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256}
		p.Actions = append(p.Actions, model.Action{
			ID: fmt.Sprintf("%s/%s/%s", id, vm, model.OpCreate), Operation: model.OpCreate, VM: vm,
			Reason: model.ReasonMissing, Spec: spec, SpecHash: spec.Hash(),
		})
		id += "+" + vm
	}
	p.ID = "plan:" + id
	return p
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// woken reports whether ch fires before a generous deadline.
func woken(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

// quiet reports whether ch stays silent for a short while (used only to
// check that nothing fires; a false "quiet" cannot make the test pass wrongly).
func quiet(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return false
	case <-time.After(50 * time.Millisecond):
		return true
	}
}
