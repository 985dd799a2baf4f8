package agent

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
)

// The first wait is spread over the whole interval, later ones grow to the
// cap, and a Retry-After is always waited out in full.
func TestBackoff(t *testing.T) {
	plain := errors.New("connection refused")
	for _, tc := range []struct {
		name   string
		r      float64
		spread time.Duration
		errs   []error
		want   []time.Duration
	}{
		{name: "lowest draws", r: 0, spread: 10 * time.Second, errs: []error{plain, plain, plain, plain},
			want: []time.Duration{0, 10 * time.Second, 20 * time.Second, 30 * time.Second}},
		{name: "highest draws", r: 0.999999999, spread: 10 * time.Second, errs: []error{plain, plain, plain, plain, plain},
			want: []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}},
		{name: "interval over the cap", r: 0.5, spread: time.Hour, errs: []error{plain, plain},
			want: []time.Duration{30 * time.Second, 45 * time.Second}},
		{name: "retry-after wins", r: 0, spread: 10 * time.Second,
			errs: []error{fmt.Errorf("heartbeat: %w", &api.Error{Status: 503, RetryAfter: 7 * time.Second}), plain},
			want: []time.Duration{7 * time.Second, 10 * time.Second}},
		{name: "retry-after beyond the cap", r: 0, spread: 10 * time.Second,
			errs: []error{&api.Error{Status: 429, RetryAfter: 5 * time.Minute}},
			want: []time.Duration{5 * time.Minute}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := backoff{rand: func() float64 { return tc.r }}
			for i, err := range tc.errs {
				got := b.next(tc.spread, err)
				// The highest draw is a hair under the span.
				if got > tc.want[i] || got < tc.want[i]-time.Millisecond {
					t.Errorf("wait %d = %s, want %s", i+1, got, tc.want[i])
				}
			}
			b.reset()
			if got := b.next(tc.spread, nil); got > min(tc.spread, DefaultMaxBackoff) {
				t.Errorf("after reset: %s, want within the first spread", got)
			}
		})
	}
}
