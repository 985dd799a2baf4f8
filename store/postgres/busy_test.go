package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nkudo/nkudo/store"
)

// TestHeartbeatBusyWhileSiteLocked: a heartbeat of a site whose row
// another transaction holds (as storing a batch of plans does) gives up
// with ErrBusy instead of holding a heartbeat connection until that
// transaction ends; once the row is free, heartbeats are recorded.
func TestHeartbeatBusyWhileSiteLocked(t *testing.T) {
	ctx := t.Context()
	s, url := openURL(t)
	admin := store.Actor{Kind: store.ActorAdmin, ID: "t"}
	if _, err := s.CreateTenant(ctx, admin, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	for _, site := range []string{"edge-1", "edge-2"} {
		if _, err := s.CreateSite(ctx, admin, "acme", site); err != nil {
			t.Fatal(err)
		}
	}
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM sites WHERE tenant = 'acme' AND name = 'edge-1' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	hb := store.Heartbeat{Facts: []byte(`{}`), Time: time.Now()}
	// Bounded here so that a heartbeat that waits for the lock fails the
	// test instead of hanging it.
	bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := s.RecordHeartbeat(bctx, "acme", "edge-1", hb); !errors.Is(err, store.ErrBusy) {
		t.Errorf("heartbeat of a locked site: %v, want ErrBusy", err)
	}
	if _, err := s.RecordHeartbeat(ctx, "acme", "edge-2", hb); err != nil {
		t.Errorf("heartbeat of another site meanwhile: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordHeartbeat(ctx, "acme", "edge-1", hb); err != nil {
		t.Errorf("heartbeat once the row is free: %v", err)
	}
}
