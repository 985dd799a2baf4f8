package postgres

import (
	"testing"

	"github.com/nkudo/nkudo/internal/pgtest"
)

// Only heartbeat sessions set synchronous_commit themselves; everything
// else keeps the server's setting. (The test cluster runs with
// synchronous_commit=off globally, so the check is on who set it.)
func TestHeartbeatPoolAsync(t *testing.T) {
	s, err := Open(t.Context(), pgtest.URL(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const q = `SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'`
	var hbVal, hbSrc, mainSrc, mainVal string
	if err := s.db.hbPool.QueryRow(t.Context(), q).Scan(&hbVal, &hbSrc); err != nil {
		t.Fatal(err)
	}
	if err := s.db.pool.QueryRow(t.Context(), q).Scan(&mainVal, &mainSrc); err != nil {
		t.Fatal(err)
	}
	if hbVal != "off" || hbSrc != "client" {
		t.Errorf("heartbeat pool synchronous_commit = %q from %q, want off from the client", hbVal, hbSrc)
	}
	if mainSrc == "client" {
		t.Errorf("main pool sets synchronous_commit = %q itself; it must keep the server's setting", mainVal)
	}
}
