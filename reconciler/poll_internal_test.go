package reconciler

import (
	"testing"
	"time"
)

// TestPollSchedule: a repository is due at once, then not before 90% of
// the interval and always by 110% of it; retry makes it due again.
func TestPollSchedule(t *testing.T) {
	const iv = time.Minute
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 200 { // the jitter is random: many draws
		var p pollSchedule
		if !p.due("fleet", t0, iv) {
			t.Fatal("a repository never polled is not due")
		}
		if p.due("fleet", t0.Add(iv*9/10-time.Nanosecond), iv) {
			t.Fatalf("draw %d: due before 90%% of the interval", i)
		}
		if !p.due("fleet", t0.Add(iv*11/10), iv) {
			t.Fatalf("draw %d: not due at 110%% of the interval", i)
		}
	}
	var p pollSchedule
	p.due("fleet", t0, iv)
	if !p.due("infra", t0, iv) {
		t.Error("one repository's poll delays another's")
	}
	p.retry("fleet")
	if !p.due("fleet", t0.Add(time.Second), iv) {
		t.Error("not due after retry")
	}
}
