package postgres

import (
	"testing"

	"github.com/nkudo/nkudo/internal/pgtest"
)

// Only heartbeats give up synchronous commit; everything else keeps the
// server's setting.
func TestHeartbeatPoolAsync(t *testing.T) {
	s, err := Open(t.Context(), pgtest.URL(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var hb, main string
	if err := s.db.hbPool.QueryRow(t.Context(), `SHOW synchronous_commit`).Scan(&hb); err != nil {
		t.Fatal(err)
	}
	if err := s.db.pool.QueryRow(t.Context(), `SELECT reset_val FROM pg_settings WHERE name = 'synchronous_commit'`).Scan(&main); err != nil {
		t.Fatal(err)
	}
	var cur string
	if err := s.db.pool.QueryRow(t.Context(), `SHOW synchronous_commit`).Scan(&cur); err != nil {
		t.Fatal(err)
	}
	if hb != "off" {
		t.Errorf("heartbeat pool synchronous_commit = %q, want off", hb)
	}
	if cur != main {
		t.Errorf("main pool synchronous_commit = %q, want the server's %q", cur, main)
	}
}
