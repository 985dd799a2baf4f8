package nbsync_test

import (
	"log/slog"
	"testing"

	"github.com/nkudo/nkudo/controlplane/nbsync"
	"github.com/nkudo/nkudo/store/backend"
)

// TestOneReplicaSyncs: replicas share the lease, so only one mints keys.
func TestOneReplicaSyncs(t *testing.T) {
	ctx := t.Context()
	st, err := backend.Open(ctx, "", t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a := nbsync.New(nbsync.Options{Store: st, Holder: "replica-a"})
	b := nbsync.New(nbsync.Options{Store: st, Holder: "replica-b"})
	if ran, err := a.RunOnce(ctx); err != nil || !ran {
		t.Fatalf("first replica: ran %v, %v", ran, err)
	}
	if ran, err := b.RunOnce(ctx); err != nil || ran {
		t.Fatalf("second replica while the first holds the lease: ran %v, %v", ran, err)
	}
	if err := st.ReleaseLease(ctx, nbsync.Lease, "replica-a"); err != nil {
		t.Fatal(err)
	}
	if ran, err := b.RunOnce(ctx); err != nil || !ran {
		t.Fatalf("second replica after the release: ran %v, %v", ran, err)
	}
}
