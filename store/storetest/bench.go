package storetest

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// OpenB is Open for benchmarks.
type OpenB func(b *testing.B) store.Store

// Bench measures the hot paths: heartbeats, plan storage, action results
// and log appends. Each reports ops/s besides ns/op.
func Bench(b *testing.B, open OpenB) {
	b.Run("Heartbeat", func(b *testing.B) { benchHeartbeat(b, open(b), false) })
	b.Run("HeartbeatParallel", func(b *testing.B) { benchHeartbeat(b, open(b), true) })
	b.Run("HeartbeatInventoryChanged", benchHeartbeatChanged(open))
	b.Run("StorePlan", func(b *testing.B) { benchStorePlan(b, open(b)) })
	b.Run("ActionResult", func(b *testing.B) { benchActionResult(b, open(b)) })
	b.Run("AppendLogs50", func(b *testing.B) { benchAppendLogs(b, open(b)) })
	b.Run("AuthLookups", func(b *testing.B) { benchAuth(b, open(b)) })
	b.Run("AuditedParallel", func(b *testing.B) { benchAuditedParallel(b, open(b)) })
	b.Run("ActivePlanParallel", func(b *testing.B) { benchActivePlan(b, open(b)) })
}

// benchAuditedParallel measures audited writes from 64 writers at once:
// every audited transaction takes the audit chain's head, so this is the
// rate at which a busy control plane's mutations (action results, plans,
// sign-ins) can commit.
func benchAuditedParallel(b *testing.B, s store.Store) {
	ctx := b.Context()
	benchSeed(b, s)
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.AppendAudit(ctx, store.AuditEvent{Tenant: tenantA, Actor: "agent:site-000", Action: "bench.audited", Object: "site/site-000"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	opsPerSec(b, b.N)
}

// benchActivePlan reads sites' active 4-action plans from parallel
// goroutines, as woken plan long-polls do under a rollout.
func benchActivePlan(b *testing.B, s store.Store) {
	ctx := b.Context()
	benchSeed(b, s)
	now := time.Now()
	for i := range benchSites {
		p := plan(tenantA, fmt.Sprintf("site-%03d", i), "a", "vm-a", "vm-b", "vm-c", "vm-d")
		must2(s.StorePlan(ctx, admin, p, "", now))(b)
	}
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			site := fmt.Sprintf("site-%03d", n.Add(1)%benchSites)
			if p, err := s.ActivePlan(ctx, tenantA, site); err != nil || len(p.Actions) != 4 {
				b.Errorf("ActivePlan(%s): %v, %d actions", site, err, len(p.Actions))
				return
			}
		}
	})
	opsPerSec(b, b.N)
}

// benchAuth measures what every request costs before its handler runs: an
// API token lookup, or a revocation check of an agent's certificate serial.
// One op is one of each.
func benchAuth(b *testing.B, s store.Store) {
	ctx := b.Context()
	benchSeed(b, s)
	must2(s.CreateAPIToken(ctx, admin, store.APIToken{Tenant: tenantA, Name: "bench"}, store.HashSecret("bench-secret")))(b)
	must(b, s.RevokeSerial(ctx, admin, tenantA, "site-000", "01ab", time.Now()))
	hash := store.HashSecret("bench-secret")
	now := time.Now()
	b.ResetTimer()
	for range b.N {
		if _, err := s.APITokenByHash(ctx, hash, now); err != nil {
			b.Fatal(err)
		}
		if revoked, err := s.IsSerialRevoked(ctx, "02cd"); err != nil || revoked {
			b.Fatalf("IsSerialRevoked: %v %v", revoked, err)
		}
	}
	opsPerSec(b, b.N)
}

const benchSites = 100

func benchSeed(b *testing.B, s store.Store) {
	b.Helper()
	ctx := b.Context()
	must2(s.CreateTenant(ctx, admin, store.Tenant{ID: tenantA}))(b)
	for i := range benchSites {
		must2(s.CreateSite(ctx, admin, tenantA, fmt.Sprintf("site-%03d", i)))(b)
	}
}

func opsPerSec(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "ops/s")
}

func benchVMs(n int, state model.VMState) []model.ObservedVM {
	vms := make([]model.ObservedVM, n)
	for i := range vms {
		vms[i] = model.ObservedVM{Name: fmt.Sprintf("vm-%02d", i), State: state, Managed: true, SpecHash: "0123456789abcdef", CPUs: 2, MemoryMiB: 1024}
	}
	return vms
}

var benchFacts = []byte(`{"cpus":16,"memoryMiB":65536,"diskFreeGiB":412,"kvm":true,"hypervisor":"cloud-hypervisor v53.0","netbird":{"connected":true}}`)

// benchHeartbeat sends steady-state heartbeats (same 10 VMs) round-robin over 100 sites.
func benchHeartbeat(b *testing.B, s store.Store, parallel bool) {
	ctx := b.Context()
	benchSeed(b, s)
	vms := benchVMs(10, model.VMRunning)
	now := time.Now()
	for i := range benchSites {
		must2(s.RecordHeartbeat(ctx, tenantA, fmt.Sprintf("site-%03d", i), store.Heartbeat{Facts: benchFacts, VMs: vms, Time: now}))(b)
	}
	b.ResetTimer()
	if !parallel {
		for i := range b.N {
			if _, err := s.RecordHeartbeat(ctx, tenantA, fmt.Sprintf("site-%03d", i%benchSites), store.Heartbeat{Facts: benchFacts, VMs: vms, Interval: 15 * time.Second, Time: now}); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		var next int64
		var mu = make(chan struct{}, 1)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu <- struct{}{}
				i := next
				next++
				<-mu
				if _, err := s.RecordHeartbeat(ctx, tenantA, fmt.Sprintf("site-%03d", i%benchSites), store.Heartbeat{Facts: benchFacts, VMs: vms, Interval: 15 * time.Second, Time: now}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	opsPerSec(b, b.N)
}

func benchHeartbeatChanged(open OpenB) func(*testing.B) {
	return func(b *testing.B) {
		s := open(b)
		ctx := b.Context()
		benchSeed(b, s)
		sets := [][]model.ObservedVM{benchVMs(10, model.VMRunning), benchVMs(10, model.VMStopped)}
		now := time.Now()
		b.ResetTimer()
		for i := range b.N {
			site := i % benchSites
			res, err := s.RecordHeartbeat(ctx, tenantA, fmt.Sprintf("site-%03d", site), store.Heartbeat{Facts: benchFacts, VMs: sets[(i/benchSites)%2], Time: now})
			if err != nil {
				b.Fatal(err)
			}
			if !res.Changed {
				b.Fatal("inventory did not change")
			}
		}
		opsPerSec(b, b.N)
	}
}

// benchStorePlan stores a new 4-action plan per op, superseding the site's previous one.
func benchStorePlan(b *testing.B, s store.Store) {
	ctx := b.Context()
	benchSeed(b, s)
	now := time.Now()
	b.ResetTimer()
	for i := range b.N {
		site := fmt.Sprintf("site-%03d", i%benchSites)
		p := plan(tenantA, site, fmt.Sprintf("b%d", i), "vm-a", "vm-b", "vm-c", "vm-d")
		if stored, err := s.StorePlan(ctx, admin, p, "", now); err != nil || !stored {
			b.Fatalf("StorePlan: %v, stored %v", err, stored)
		}
	}
	opsPerSec(b, b.N)
}

// benchActionResult records one result per op over 4-action plans stored beforehand.
func benchActionResult(b *testing.B, s store.Store) {
	ctx := b.Context()
	benchSeed(b, s)
	now := time.Now()
	type target struct{ site, plan, action string }
	var targets []target
	for i := 0; len(targets) < b.N; i++ {
		site := fmt.Sprintf("site-%03d", i%benchSites)
		p := plan(tenantA, site, fmt.Sprintf("r%d", i), "vm-a", "vm-b", "vm-c", "vm-d")
		// Results of superseded plans are recorded too, so storing many
		// plans per site is fine and keeps setup short.
		must2(s.StorePlan(ctx, admin, p, "", now))(b)
		for _, a := range p.Actions {
			targets = append(targets, target{site, p.ID, a.ID})
		}
	}
	b.ResetTimer()
	for i := range b.N {
		tg := targets[i]
		out, err := s.RecordActionResult(ctx, agent, tenantA, tg.site, store.ActionResult{PlanID: tg.plan, ActionID: tg.action, Status: model.ActionSucceeded, Output: []byte(`{"ok":true}`), FinishedAt: now})
		if err != nil || !out.New {
			b.Fatalf("RecordActionResult: %v, new %v", err, out.New)
		}
	}
	opsPerSec(b, b.N)
}

// benchAppendLogs appends batches of 50 lines (an agent's typical flush) to one plan.
func benchAppendLogs(b *testing.B, s store.Store) {
	ctx := b.Context()
	benchSeed(b, s)
	p := plan(tenantA, "site-000", "logs", "vm-a")
	must2(s.StorePlan(ctx, admin, p, "", time.Now()))(b)
	const batch = 50
	lines := make([]store.LogLine, batch)
	now := time.Now()
	b.ResetTimer()
	for i := range b.N {
		for j := range lines {
			lines[j] = store.LogLine{PlanID: p.ID, ActionID: p.Actions[0].ID, Seq: int64(i*batch + j + 1), Time: now, Stream: store.StreamStdout,
				Line: "cloud-hypervisor: [vmm] booting vCPU 0 with a line of realistic length for a log"}
		}
		n, err := s.AppendLogs(ctx, tenantA, "site-000", lines)
		if err != nil || n != batch {
			b.Fatalf("AppendLogs: %v, inserted %d", err, n)
		}
	}
	opsPerSec(b, b.N)
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "lines/s")
}
