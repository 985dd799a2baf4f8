package agent

import (
	"math/rand/v2"
	"time"

	"github.com/nkudo/nkudo/api"
)

// DefaultMaxBackoff is the longest wait between two failed attempts of one
// loop when Config.MaxBackoff is zero.
const DefaultMaxBackoff = time.Minute

// backoff is the agent's wait after a failed request. The first wait is
// drawn uniformly from [0, spread), spread being the heartbeat interval
// (capped at max): a fleet that lost its control plane at one instant then
// comes back spread over an interval, the rate the control plane is sized
// for, instead of all at once. Each further failure doubles the span and
// draws from its upper half, up to max. A Retry-After the control plane
// sent is waited out in full. Not safe for concurrent use: one per loop.
type backoff struct {
	max      time.Duration
	failures int
	rand     func() float64 // [0, 1); nil = math/rand/v2
}

// next is the wait after one more failure (err), with spread the current
// heartbeat interval.
func (b *backoff) next(spread time.Duration, err error) time.Duration {
	maxWait := b.max
	if maxWait <= 0 {
		maxWait = DefaultMaxBackoff
	}
	span := min(max(spread, time.Millisecond), maxWait)
	for i := 0; i < b.failures && span < maxWait; i++ {
		span = min(span*2, maxWait)
	}
	r := rand.Float64
	if b.rand != nil {
		r = b.rand
	}
	var d time.Duration
	if b.failures == 0 {
		d = time.Duration(r() * float64(span))
	} else {
		d = span/2 + time.Duration(r()*float64(span/2))
	}
	b.failures++
	return max(d, api.RetryAfter(err))
}

// reset starts over after a success.
func (b *backoff) reset() { b.failures = 0 }
