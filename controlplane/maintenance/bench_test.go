package maintenance

import (
	"fmt"
	"testing"
	"time"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/sqlite"
)

// seedFleet creates tenants × sites enrolled sites, each with one heartbeat
// and one finished plan carrying logLines log lines.
func seedFleet(b *testing.B, st store.Store, tenants, sites, logLines int) {
	b.Helper()
	ctx := b.Context()
	now := time.Now()
	for ti := range tenants {
		tn := fmt.Sprintf("t%03d", ti)
		if _, err := st.CreateTenant(ctx, testActor, store.Tenant{ID: tn}); err != nil {
			b.Fatal(err)
		}
		for si := range sites {
			name := fmt.Sprintf("s%04d", si)
			if _, err := st.CreateSite(ctx, testActor, tn, name); err != nil {
				b.Fatal(err)
			}
			if err := st.SetSiteCertificate(ctx, testActor, tn, name, fmt.Sprintf("%s%s", tn, name), now); err != nil {
				b.Fatal(err)
			}
			if _, err := st.RecordHeartbeat(ctx, tn, name, store.Heartbeat{Time: now, Interval: 10 * time.Second,
				VMs: []model.ObservedVM{{Name: "vm-1", State: model.VMRunning, Managed: true}}}); err != nil {
				b.Fatal(err)
			}
			p := testPlan("vm-" + tn + name)
			p.Tenant, p.Site = tn, name
			if _, err := st.StorePlan(ctx, testActor, p, "", now); err != nil {
				b.Fatal(err)
			}
			lines := make([]store.LogLine, logLines)
			for i := range lines {
				lines[i] = store.LogLine{PlanID: p.ID, Seq: int64(i + 1), Time: now, Stream: store.StreamAgent, Line: "line"}
			}
			if _, err := st.AppendLogs(ctx, tn, name, lines); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func openBenchStore(b *testing.B) store.Store {
	st, err := sqlite.Open(b.Context(), b.TempDir()+"/nkudo.db", sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// BenchmarkHealthChecks measures the store-side checks of `nkudo admin
// health` on a fleet of 10 tenants × 100 sites (SQLite).
func BenchmarkHealthChecks(b *testing.B) {
	st := openBenchStore(b)
	seedFleet(b, st, 10, 100, 0)
	now := time.Now()
	b.ResetTimer()
	for b.Loop() {
		if c := CheckSites(b.Context(), st, now, SiteThresholds{Grace: time.Minute}); c.Status != StatusOK {
			b.Fatalf("%+v", c)
		}
		if c := CheckPlans(b.Context(), st, now, time.Hour); c.Status != StatusOK {
			b.Fatalf("%+v", c)
		}
	}
	b.ReportMetric(1000*float64(b.N)/b.Elapsed().Seconds(), "sites/s")
}

// BenchmarkPurgeTenant measures offboarding a tenant of 100 sites, each
// with a plan of 50 log lines (SQLite); seeding is not timed.
func BenchmarkPurgeTenant(b *testing.B) {
	st := openBenchStore(b)
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		seedFleet(b, st, 1, 100, 50)
		b.StartTimer()
		res, err := PurgeTenant(b.Context(), st, testActor, "t000", time.Now())
		if err != nil || len(res.Revoked) != 100 || res.Contents.LogLines != 5000 {
			b.Fatalf("%+v %v", res.Contents, err)
		}
	}
}
