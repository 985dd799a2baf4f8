package reconciler_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/forge/forgetest"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/store"
)

// TestReplicasOneFinalApplyStatus: two reconcilers on one Postgres.
// Replica a plans a commit and follows its nkudo/apply; a second replica
// b, running beside it, leaves the commit alone (a holds its lease). Then
// a stops after one site converged: b adopts the pending status with the
// two sites still active and writes the verdict. The forge gets exactly
// one final nkudo/apply, and no replica rewrote the pending one while the
// other followed it.
func TestReplicasOneFinalApplyStatus(t *testing.T) {
	e, open := pgReplicaEnv(t)
	ctx := t.Context()
	var err error
	e.opts = reconciler.Options{
		Store: e.st, DataDir: t.TempDir(), PublicURL: "https://cp.example.com",
		Logger: slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Writers: func(ctx context.Context, repo store.Repository) ([]forge.Writer, error) {
			w, err := forge.NewGitea(forge.GitHubOptions{BaseURL: e.forge.URL, Owner: "acme", Repo: "fleet"})
			return []forge.Writer{w}, err
		},
		Reporter:           forge.ReporterOptions{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, MaxAttempts: 1000},
		ApplyCheckInterval: 20 * time.Millisecond, DriftInterval: time.Hour, PollInterval: -1, AllowLocalSources: true,
		Egress: egress.Policy{Allow: egress.Loopback()},
	}
	if e.rec, err = reconciler.New(e.opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.rec.Close)
	actx, stopA := context.WithCancel(ctx)
	aDone := make(chan struct{})
	go func() { e.rec.Run(actx); close(aDone) }()
	t.Cleanup(func() { stopA(); <-aDone })

	ob := e.opts
	ob.Store, ob.DataDir, ob.Holder = open(), t.TempDir(), "replica-b"
	b, err := reconciler.New(ob)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	runLoop(t, b)

	e.git.Fleet("fleet", 3, 1)
	c1 := e.git.Commit("three sites")
	e.mustReconcile()
	want := desiredVMs(threeSites, 1, model.VMRunning)
	e.converge("site-0001", want, "")
	waitFor(t, "replica a to count site-0001", func() bool { return strings.HasPrefix(e.status(c1, forge.ContextApply).Description, "1 of 3") })
	// b looks for commits nobody follows every 12 checks; a holds this one.
	for range 30 {
		time.Sleep(20 * time.Millisecond)
		if d := e.status(c1, forge.ContextApply).Description; !strings.HasPrefix(d, "1 of 3") {
			t.Fatalf("pending status rewritten to %q while replica a follows the commit", d)
		}
	}

	stopA()
	<-aDone
	waitFor(t, "replica b to adopt the pending commit", func() bool {
		return strings.HasPrefix(e.status(c1, forge.ContextApply).Description, "0 of 2")
	})

	e.converge("site-0002", want, "")
	e.converge("site-0003", want, "")
	finals := func() []forgetest.Status {
		var out []forgetest.Status
		for _, s := range e.forge.Statuses(c1) {
			if s.Context == forge.ContextApply && s.State != "pending" {
				out = append(out, s)
			}
		}
		return out
	}
	waitFor(t, "a final nkudo/apply at the forge", func() bool { return len(finals()) > 0 })
	// Both replicas evaluate every 20ms: give the later one many rounds
	// to post a second verdict, as it did before the store arbitrated.
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		if n := len(finals()); n != 1 {
			t.Fatalf("final nkudo/apply statuses at the forge: %+v; want exactly one", finals())
		}
	}
	got := finals()[0]
	if got.State != "success" || e.status(c1, forge.ContextApply).Description != got.Description {
		t.Errorf("final status %+v (store: %+v); want success, the same in store and forge", got, e.status(c1, forge.ContextApply))
	}
}
