package controlplane_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

func TestMain(m *testing.M) { cptest.Main(m) }

func benchBackends(b *testing.B, fn func(b *testing.B, o cptest.Options)) {
	b.Run("sqlite", func(b *testing.B) { fn(b, cptest.Options{}) })
	b.Run("postgres", func(b *testing.B) { fn(b, cptest.Options{Postgres: true}) })
}

func noEnrollLimit(o *cptest.Options) {
	o.Configure = func(co *controlplane.Options) { co.EnrollRate = rate.Inf }
}

// BenchmarkHeartbeat measures heartbeats per second through the real
// HTTPS + mTLS stack and the store, from 16 agents in parallel, each
// reporting facts and a 3-VM inventory that changes every 10th report.
func BenchmarkHeartbeat(b *testing.B) {
	benchBackends(b, func(b *testing.B, o cptest.Options) {
		noEnrollLimit(&o)
		env := cptest.Start(b, o)
		env.NewTenant("bench")
		const agents = 16
		var clients []*api.Client
		for i := range agents {
			clients = append(clients, env.Enroll("bench", fmt.Sprintf("site-%02d", i)).Client)
		}
		facts := api.HostFacts{Hostname: "edge", OS: "linux", Arch: "amd64", CPUs: 8, MemoryMiB: 16384, KVM: true,
			Hypervisor: api.HypervisorFacts{Name: "cloud-hypervisor", Version: "v53.0"}}
		var next atomic.Int64
		b.SetParallelism(max(1, agents/runtime.GOMAXPROCS(0))) // about one goroutine per agent
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(1)
			c := clients[int(i)%agents]
			n := 0
			for pb.Next() {
				n++
				vms := []model.ObservedVM{
					{Name: "a", State: model.VMRunning, Managed: true, CPUs: 1, MemoryMiB: 256},
					{Name: "b", State: model.VMRunning, Managed: true, CPUs: 2, MemoryMiB: 512},
					{Name: "c", State: model.VMStopped, Managed: true, CPUs: 1, MemoryMiB: 256 + n/10},
				}
				if _, err := c.Heartbeat(b.Context(), api.HeartbeatRequest{Facts: facts, VMs: vms}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
	})
}

// BenchmarkLongPollWake measures the time from storing a plan to the
// agent's parked long-poll returning it, through HTTPS and the store's
// wake-up signal (in-process for SQLite, LISTEN/NOTIFY for Postgres).
func BenchmarkLongPollWake(b *testing.B) {
	benchBackends(b, func(b *testing.B, o cptest.Options) {
		env := cptest.Start(b, o)
		env.NewTenant("bench")
		agent := env.Enroll("bench", "site")
		srv := env.Server()
		st := env.Store()
		actor := store.Actor{Kind: store.ActorSystem, ID: "bench"}
		after := ""
		var total, stored time.Duration
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			got := make(chan *api.AgentPlan, 1)
			go func() {
				p, err := agent.Client.WaitPlan(b.Context(), after, 30*time.Second)
				if err != nil {
					b.Error(err)
				}
				got <- p
			}()
			deadline := time.Now().Add(10 * time.Second)
			for srv.LongPolls() == 0 {
				if time.Now().After(deadline) {
					b.Fatal("long-poll never parked")
				}
				time.Sleep(100 * time.Microsecond)
			}
			spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256}
			plan := model.Plan{ID: fmt.Sprintf("bench-plan-%d", i), Tenant: "bench", Site: "site",
				Actions: []model.Action{{ID: fmt.Sprintf("bench-action-%d", i), Operation: model.OpCreate, VM: "vm", Reason: model.ReasonMissing, Spec: &spec, SpecHash: spec.Hash()}}}
			b.StartTimer()
			start := time.Now()
			if _, err := st.StorePlan(b.Context(), actor, plan, "", start); err != nil {
				b.Fatal(err)
			}
			stored += time.Since(start)
			p := <-got
			total += time.Since(start)
			if p == nil || p.Plan.ID != plan.ID {
				b.Fatalf("long-poll returned %v, want plan %s", p, plan.ID)
			}
			after = plan.ID
		}
		b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/wake")
		// The part of it after the plan was committed: signal + HTTP answer.
		b.ReportMetric(float64((total-stored).Microseconds())/float64(b.N), "µs/after-commit")
	})
}

// BenchmarkSmallLogPostAfterLongLines measures a 10-byte log post through
// HTTPS to a plan that already holds 100 lines of 1 MiB (stored directly,
// as an older server without the line cap stored them). The gap check
// after each post reads sequence numbers, not the lines themselves.
func BenchmarkSmallLogPostAfterLongLines(b *testing.B) {
	env := cptest.Start(b, cptest.Options{})
	env.NewTenant("bench")
	agent := env.Enroll("bench", "site")
	plan := cptest.CreatePlan("bench", "site", 0, "vm")
	if _, err := env.Store().StorePlan(b.Context(), store.Actor{Kind: store.ActorSystem, ID: "bench"}, plan, "", time.Now()); err != nil {
		b.Fatal(err)
	}
	long := string(make([]byte, 1<<20))
	for seq := int64(1); seq <= 100; seq++ {
		if _, err := env.Store().AppendLogs(b.Context(), "bench", "site", []store.LogLine{{PlanID: plan.ID, Seq: seq, Stream: store.StreamStdout, Line: long}}); err != nil {
			b.Fatal(err)
		}
	}
	seq := int64(100)
	for b.Loop() {
		seq++
		if _, err := agent.Client.SendLogs(b.Context(), []api.LogLine{{PlanID: plan.ID, Seq: seq, Stream: api.StreamStdout, Line: "ten bytes!"}}); err != nil {
			b.Fatal(err)
		}
	}
}
