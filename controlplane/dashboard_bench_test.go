package controlplane_test

import (
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// BenchmarkFleetPage measures the fleet page's server-side work for a
// tenant of 1,000 sites, each with facts, a 3-VM inventory, labels and a
// plan: "gather" reads the store and builds the rows (FleetPage), "render"
// executes the template, "both" is what one page view costs the server.
func BenchmarkFleetPage(b *testing.B) {
	const sites = 1000
	env := cptest.Start(b, cptest.Options{})
	ten := env.NewTenant("fleet")
	ctx := b.Context()
	repo, err := ten.Client.CreateRepo(ctx, api.CreateRepoRequest{Name: "fleet", URL: "https://git.example.net/fleet.git", WebhookSecret: "s"})
	if err != nil {
		b.Fatal(err)
	}
	st := env.Store()
	sys := store.Actor{Kind: store.ActorSystem, ID: "bench"}
	facts, _ := json.Marshal(api.HostFacts{Hostname: "edge", OS: "linux", Arch: "amd64", CPUs: 8, MemoryMiB: 16384, KVM: true, AgentVersion: "v1.4.0"})
	now := time.Now()
	for i := range sites {
		name := fmt.Sprintf("store-%04d", i)
		if _, err := st.CreateSite(ctx, sys, "fleet", name); err != nil {
			b.Fatal(err)
		}
		vms := []model.ObservedVM{
			{Name: "pos-1", State: model.VMRunning, Managed: true, CPUs: 1, MemoryMiB: 256},
			{Name: "pos-2", State: model.VMRunning, Managed: true, CPUs: 1, MemoryMiB: 256},
			{Name: "cam", State: model.VMStopped, Managed: true, CPUs: 1, MemoryMiB: 512},
		}
		if _, err := st.RecordHeartbeat(ctx, "fleet", name, store.Heartbeat{Facts: facts, VMs: vms, Interval: 10 * time.Second, Time: now.Add(-time.Duration(i%40) * time.Second)}); err != nil {
			b.Fatal(err)
		}
		plan := cptest.CreatePlan("fleet", name, 1, "pos-3")
		d := store.SiteDesired{Site: name, Hash: "h" + name, InventoryVersion: 1, Commit: "c0ffee", Documented: true,
			Document: &model.Site{Name: name, Labels: map[string]string{"region": []string{"eu-west", "us-east"}[i%2]}}}
		if _, err := st.RecordSitePlan(ctx, sys, "fleet", repo.ID, d, &plan, now); err != nil {
			b.Fatal(err)
		}
	}
	r, err := ui.NewRenderer()
	if err != nil {
		b.Fatal(err)
	}
	srv := env.Server()
	q := ui.FleetQuery{Sort: "name"}
	page, err := srv.FleetPage(ctx, "fleet", q)
	if err != nil {
		b.Fatal(err)
	}
	if len(page.Rows) != sites || page.Rows[0].LastPlan == nil || page.Rows[0].Labels["region"] == "" {
		b.Fatalf("fleet page has %d rows (first %+v), want %d with plans and labels", len(page.Rows), page.Rows[0], sites)
	}
	b.Run("gather", func(b *testing.B) {
		for b.Loop() {
			if _, err := srv.FleetPage(ctx, "fleet", q); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("render", func(b *testing.B) {
		for b.Loop() {
			if err := r.Execute(io.Discard, "fleet.html", page); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("both", func(b *testing.B) {
		for b.Loop() {
			p, err := srv.FleetPage(ctx, "fleet", q)
			if err != nil {
				b.Fatal(err)
			}
			if err := r.Execute(io.Discard, "fleet.html", p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
