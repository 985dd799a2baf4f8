package controlplane

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestSignInLimiterMemoryIsBounded: a flood of distinct addresses never
// makes the limiter remember more than its bound, and an address seen
// recently keeps its (spent) bucket while older ones are forgotten.
func TestSignInLimiterMemoryIsBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newSignInLimiter(rate.Every(time.Hour), 1, rate.Inf, 1, func() time.Time { return now })
	l.max = 100
	for i := range 1000 {
		now = now.Add(time.Millisecond)
		l.allow(fmt.Sprintf("192.0.2.%d/%d", i%250, i))
		if n := l.len(); n > l.max {
			t.Fatalf("after %d addresses the limiter holds %d, bound %d", i+1, n, l.max)
		}
	}
	if ok, wait, global := l.allow("192.0.2.249/999"); ok || wait <= 0 || global {
		t.Errorf("the most recent address got a fresh bucket: ok=%v wait=%s global=%v", ok, wait, global)
	}
}
