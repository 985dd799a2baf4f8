package maintenance

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/postgres"
	"github.com/nkudo/nkudo/store/sqlite"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var testActor = store.Actor{Kind: store.ActorAdmin, ID: "test"}

// forEachStore runs fn on a fresh SQLite store and a fresh Postgres one.
func forEachStore(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		st, err := sqlite.Open(t.Context(), t.TempDir()+"/nkudo.db", sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		st, err := postgres.Open(t.Context(), pgtest.URL(t), postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
}

func testPlan(vm string) model.Plan {
	spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 128}
	return model.Plan{ID: "plan-" + vm, Tenant: "acme", Site: "s1", Actions: []model.Action{
		{ID: "act-" + vm, Operation: model.OpCreate, VM: vm, Reason: model.ReasonMissing, Spec: &spec, SpecHash: spec.Hash()},
	}}
}

// TestRetention stores plans and deliveries at chosen times and checks
// that a run with an injected clock deletes the old finished ones (with
// their logs), keeps recent and active ones, counts what it pruned, and
// that only the lease holder prunes.
func TestRetention(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		ctx := t.Context()
		if _, err := st.CreateTenant(ctx, testActor, store.Tenant{ID: "acme"}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateSite(ctx, testActor, "acme", "s1"); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC().Truncate(time.Second)
		// Storing a plan supersedes the site's active one at the time given:
		// old is superseded 40 days ago, recent a day ago, active stays.
		old, recent, active := testPlan("vm-old"), testPlan("vm-recent"), testPlan("vm-active")
		for _, p := range []struct {
			plan model.Plan
			at   time.Time
		}{{old, now.Add(-41 * 24 * time.Hour)}, {recent, now.Add(-40 * 24 * time.Hour)}, {active, now.Add(-24 * time.Hour)}} {
			if _, err := st.StorePlan(ctx, testActor, p.plan, "", p.at); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := st.AppendLogs(ctx, "acme", "s1", []store.LogLine{{PlanID: old.ID, Seq: 1, Time: now, Stream: store.StreamAgent, Line: "x"}}); err != nil {
			t.Fatal(err)
		}
		for id, at := range map[string]time.Time{"old": now.Add(-8 * 24 * time.Hour), "recent": now.Add(-6 * 24 * time.Hour)} {
			if _, err := st.RecordDelivery(ctx, "github", id, at); err != nil {
				t.Fatal(err)
			}
		}

		clock := now
		reg := prometheus.NewRegistry()
		r, err := NewRetention(RetentionOptions{Store: st, Registerer: reg, Holder: "a", Now: func() time.Time { return clock }})
		if err != nil {
			t.Fatal(err)
		}
		standby, err := NewRetention(RetentionOptions{Store: st, Holder: "b", Now: func() time.Time { return clock.Add(365 * 24 * time.Hour) }})
		if err != nil {
			t.Fatal(err)
		}

		got, err := r.RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Pruned{Ran: true, Plans: 1, Deliveries: 1}); got != want {
			t.Errorf("first run: %+v, want %+v", got, want)
		}
		if _, err := st.GetPlan(ctx, "acme", old.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("plan superseded 41 days ago: %v, want not found", err)
		}
		if _, err := st.Logs(ctx, "acme", old.ID, 0, 0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("logs of the pruned plan: %v, want not found", err)
		}
		for _, p := range []model.Plan{recent, active} {
			if _, err := st.GetPlan(ctx, "acme", p.ID); err != nil {
				t.Errorf("plan %s: %v, want kept", p.ID, err)
			}
		}
		if dup, err := st.RecordDelivery(ctx, "github", "recent", now); err != nil || !dup {
			t.Errorf("recent delivery: duplicate %v (%v), want still remembered", dup, err)
		}
		if dup, err := st.RecordDelivery(ctx, "github", "old", now); err != nil || dup {
			t.Errorf("old delivery: duplicate %v (%v), want forgotten", dup, err)
		}
		if n := counterValue(r.pruned.WithLabelValues("plans")); n != 1 {
			t.Errorf("pruned plans counter %v, want 1", n)
		}

		// Another replica stands by while the lease is held, whatever its clock says.
		if p, err := standby.RunOnce(ctx); err != nil || p.Ran {
			t.Errorf("second replica while the lease is held: %+v %v, want standby", p, err)
		}
		if _, err := st.GetPlan(ctx, "acme", recent.ID); err != nil {
			t.Errorf("the standby replica pruned: %v", err)
		}

		// Thirty days on, the recent plan is old too; the active one never goes.
		clock = now.Add(30 * 24 * time.Hour)
		got, err = r.RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.Plans != 1 {
			t.Errorf("run 30 days later pruned %d plans, want 1", got.Plans)
		}
		if _, err := st.ActivePlan(ctx, "acme", "s1"); err != nil {
			t.Errorf("active plan after pruning: %v", err)
		}
		if n := counterValue(r.pruned.WithLabelValues("plans")); n != 2 {
			t.Errorf("pruned plans counter %v, want 2", n)
		}
		if v, err := st.VerifyAudit(ctx); err != nil || !v.OK() {
			t.Errorf("audit chain after pruning: %+v %v", v, err)
		}
	})
}

// TestRetentionRunReleasesLease runs the job until its context ends and
// checks that it pruned at once and handed the lease back.
func TestRetentionRunReleasesLease(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		ctx := t.Context()
		now := time.Now()
		if _, err := st.RecordDelivery(ctx, "gitea", "d1", now.Add(-30*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		r, err := NewRetention(RetentionOptions{Store: st, Holder: "a", Interval: time.Hour, Plans: -1})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); r.Run(rctx) }()
		deadline := time.Now().Add(10 * time.Second)
		for counterValue(r.runs.WithLabelValues("pruned")) < 1 {
			if time.Now().After(deadline) {
				t.Fatal("the job did not run at start")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n := counterValue(r.pruned.WithLabelValues("deliveries")); n != 1 {
			t.Errorf("pruned deliveries %v, want 1", n)
		}
		cancel()
		<-done
		if ok, err := st.AcquireLease(ctx, RetentionLease, "b", time.Minute); err != nil || !ok {
			t.Errorf("lease after the job stopped: %v %v, want free", ok, err)
		}
	})
}

func TestNewRetentionRejectsNegativeInterval(t *testing.T) {
	if _, err := NewRetention(RetentionOptions{Store: nil}); err == nil {
		t.Error("no store: want an error")
	}
	st, err := sqlite.Open(t.Context(), t.TempDir()+"/n.db", sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := NewRetention(RetentionOptions{Store: st, Interval: -time.Second}); err == nil {
		t.Error("negative interval: want an error")
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
