package reconciler_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/postgres"
)

const benchSites, benchVMs = 1000, 10

func benchSiteNames() []string {
	names := make([]string, benchSites)
	for i := range names {
		names[i] = gittest.SiteName(i + 1)
	}
	return names
}

// changeOneSite rewrites one site's file so exactly its VMs change.
func changeOneSite(e *env, n int) string {
	site := gittest.SiteName(n%benchSites + 1)
	var b strings.Builder
	b.WriteString(gittest.Site(site))
	for v := 1; v <= benchVMs; v++ {
		b.WriteString("---\n")
		b.WriteString(gittest.VM(site, fmt.Sprintf("vm-%02d", v), "Running", 1+(n/benchSites+1)%2+(v%2)))
	}
	e.git.Write("fleet/"+site+".yaml", b.String())
	e.git.Commit(fmt.Sprintf("change %s (%d)", site, n))
	return site
}

// BenchmarkReconcileCold reconciles a 1,000-site × 10-VM repository from
// scratch: clone, load and validate 11,000 documents, plan every site,
// store 1,000 plans.
func BenchmarkReconcileCold(b *testing.B) { benchReconcileCold(b, openStore) }

// BenchmarkReconcileColdPostgres is BenchmarkReconcileCold storing into
// PostgreSQL (pgtest's throw-away cluster, or NKUDO_TEST_DATABASE_URL).
// It runs only when NKUDO_TEST_POSTGRES or NKUDO_TEST_DATABASE_URL is set.
func BenchmarkReconcileColdPostgres(b *testing.B) {
	if os.Getenv("NKUDO_TEST_POSTGRES") == "" && os.Getenv("NKUDO_TEST_DATABASE_URL") == "" {
		b.Skip("PostgreSQL benchmark: set NKUDO_TEST_POSTGRES=require or NKUDO_TEST_DATABASE_URL")
	}
	benchReconcileCold(b, func(t testing.TB) store.Store {
		st, err := postgres.Open(t.Context(), pgtest.URL(t), postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}

func benchReconcileCold(b *testing.B, open func(testing.TB) store.Store) {
	e := newEnv(b, benchSiteNames(), nil)
	e.git.Fleet("fleet", benchSites, benchVMs)
	e.git.Commit("fleet")
	var phases phaseTimes
	cpu := startCPU()
	for b.Loop() {
		b.StopTimer()
		cpu.pause()
		st := open(b)
		if _, err := st.CreateTenant(b.Context(), admin, store.Tenant{ID: tenant}); err != nil {
			b.Fatal(err)
		}
		for _, s := range benchSiteNames() {
			if _, err := st.CreateSite(b.Context(), admin, tenant, s); err != nil {
				b.Fatal(err)
			}
		}
		repo, err := st.CreateRepository(b.Context(), admin, store.Repository{Tenant: tenant, Name: "fleet", URL: e.git.Remote, Branch: "main"}, "s")
		if err != nil {
			b.Fatal(err)
		}
		o := e.opts
		o.Store, o.DataDir = st, b.TempDir()
		rec, err := reconciler.New(o)
		if err != nil {
			b.Fatal(err)
		}
		cpu.resume()
		b.StartTimer()
		res, err := rec.Reconcile(b.Context(), repo, "")
		if err != nil {
			b.Fatal(err)
		}
		phases.add(res)
		if len(res.Stored) != benchSites {
			b.Fatalf("stored %d plans, want %d", len(res.Stored), benchSites)
		}
	}
	cpu.report(b)
	phases.report(b)
}

// BenchmarkReconcileOneFileChange reconciles a commit that changes one
// site of the 1,000: it must cost about one site, not the repository.
func BenchmarkReconcileOneFileChange(b *testing.B) {
	e := newEnv(b, benchSiteNames(), nil)
	e.git.Fleet("fleet", benchSites, benchVMs)
	e.git.Commit("fleet")
	if res := e.mustReconcile(); len(res.Stored) != benchSites {
		b.Fatalf("cold reconcile stored %d", len(res.Stored))
	}
	n := 0
	var phases phaseTimes
	cpu := startCPU()
	for b.Loop() {
		b.StopTimer()
		cpu.pause()
		site := changeOneSite(e, n)
		n++
		cpu.resume()
		b.StartTimer()
		res := e.mustReconcile()
		phases.add(res)
		if !res.IncrementalLoad {
			b.Fatalf("a one-file change was loaded in full")
		}
		if len(res.Planned) != 1 || res.Planned[0] != site {
			b.Fatalf("planned %v, want [%s]", res.Planned, site)
		}
	}
	cpu.report(b)
	phases.report(b)
}

// BenchmarkWebhookToPlansStored measures a signed push delivery to the
// moment the changed site's plan is in the store, through the webhook
// handler, the reconciler's task queue and an incremental reconcile
// of the 1,000-site repository.
func BenchmarkWebhookToPlansStored(b *testing.B) {
	e := newEnv(b, benchSiteNames(), nil)
	e.git.Fleet("fleet", benchSites, benchVMs)
	e.git.Commit("fleet")
	// The 1,000 cold plans stay pending (no agents): check them rarely so
	// the figure is the delivery path, not apply tracking.
	e.opts.ApplyCheckInterval = time.Minute
	loop, err := reconciler.NewLoop(e.opts)
	if err != nil {
		b.Fatal(err)
	}
	// The cold reconcile happens before timing, by the loop itself (its
	// cache of the last valid tree is what makes the next ones incremental).
	if _, err := loop.Reconcile(b.Context(), e.repo, ""); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan struct{})
	go func() { loop.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	n := 0
	cpu := startCPU()
	for b.Loop() {
		b.StopTimer()
		cpu.pause()
		site := changeOneSite(e, n)
		head := e.git.Head()
		n++
		// Each push names its own commit, as a forge's does: the same body
		// twice would be dropped as a replay.
		body := `{"ref":"refs/heads/main","before":"` + strings.Repeat("0", 40) + `","after":"` + head + `"}`
		req := httptest.NewRequestWithContext(b.Context(), http.MethodPost, "/v1/webhooks/"+e.repo.ID, strings.NewReader(body))
		req.SetPathValue("repo", e.repo.ID)
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", fmt.Sprint("bench-", n, "-", time.Now().UnixNano()))
		req.Header.Set("X-Hub-Signature-256", "sha256="+hmacHex("hook-secret", body))
		cpu.resume()
		b.StartTimer()
		rec := httptest.NewRecorder()
		loop.Webhooks.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			b.Fatalf("webhook: %d %s", rec.Code, rec.Body)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			ap, err := e.st.ActivePlan(b.Context(), tenant, site)
			if err == nil && ap.Plan.Commit == head {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("plan for %s at %s never stored", site, head[:8])
			}
			time.Sleep(time.Millisecond)
		}
	}
	cpu.report(b)
}

// cpuMeter sums the process CPU time (user+system) spent while timing:
// on a shared machine wall time says more about the neighbours.
type cpuMeter struct {
	total time.Duration
	since time.Duration
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() *cpuMeter   { return &cpuMeter{since: processCPU()} }
func (c *cpuMeter) pause()  { c.total += processCPU() - c.since }
func (c *cpuMeter) resume() { c.since = processCPU() }
func (c *cpuMeter) report(b *testing.B) {
	c.pause()
	b.ReportMetric(float64(c.total.Milliseconds())/float64(b.N), "cpu-ms/op")
}

type phaseTimes struct {
	n                 int
	fetch, load, plan time.Duration
}

func (p *phaseTimes) add(r reconciler.Result) {
	p.n++
	p.fetch += r.Fetch
	p.load += r.Load
	p.plan += r.Plan
}

func (p *phaseTimes) report(b *testing.B) {
	if p.n == 0 {
		return
	}
	b.ReportMetric(float64(p.fetch.Milliseconds())/float64(p.n), "fetch-ms/op")
	b.ReportMetric(float64(p.load.Milliseconds())/float64(p.n), "load-ms/op")
	b.ReportMetric(float64(p.plan.Milliseconds())/float64(p.n), "plan-ms/op")
}
