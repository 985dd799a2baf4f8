package reconciler_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// TestReconcileErrorsMetric: a failed reconcile is counted by tenant and
// reason, an invalid commit apart from a failure an operator must see.
func TestReconcileErrorsMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, []string{gittest.SiteName(1)}, func(o *reconciler.Options) { o.Metrics = reg })
	count := func(reason string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "nkudo_reconcile_errors_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["tenant"] == tenant && labels["reason"] == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}

	e.git.Fleet("", 1, 1)
	e.git.Commit("a valid fleet")
	e.mustReconcile()
	if count("invalid") != 0 || count("error") != 0 {
		t.Fatalf("a good reconcile was counted as failed: invalid %v, error %v", count("invalid"), count("error"))
	}

	e.git.Write("sites/broken.yaml", "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata: {}\n")
	e.git.Commit("an invalid site")
	if _, err := e.reconcile(""); !errors.Is(err, reconciler.ErrInvalidCommit) {
		t.Fatalf("reconcile of an invalid commit: %v", err)
	}
	if count("invalid") != 1 || count("error") != 0 {
		t.Errorf("after an invalid commit: invalid %v, error %v; want 1, 0", count("invalid"), count("error"))
	}

	gone, err := e.st.CreateRepository(t.Context(), admin, store.Repository{Tenant: tenant, Name: "gone", URL: "file://" + filepath.Join(t.TempDir(), "missing"), Branch: "main"}, "hook-secret")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.rec.Reconcile(t.Context(), gone, ""); err == nil {
		t.Fatal("reconcile of a missing repository succeeded")
	}
	if count("error") != 1 {
		t.Errorf("after a failed fetch: error %v, want 1", count("error"))
	}

	// A reconcile cut short (the server stopping) did not fail.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := e.rec.Reconcile(ctx, gone, ""); err == nil {
		t.Fatal("reconcile with an ended context succeeded")
	}
	if count("error") != 1 {
		t.Errorf("after a cancelled reconcile: error %v, want still 1", count("error"))
	}

	// A second reconciler on the same registry shares the series.
	if _, err := reconciler.New(reconciler.Options{Store: e.st, DataDir: t.TempDir(), Metrics: reg}); err != nil {
		t.Errorf("second reconciler on one registry: %v", err)
	}
}
