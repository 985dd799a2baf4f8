package controlplane

import (
	"cmp"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Dashboard sign-in limits. A sign-in costs a store read of a token hash,
// and the form is the one place a stranger can guess tokens, so attempts
// are bounded per client address and over all addresses together: the
// global bucket caps what many addresses can do, and the per-address one
// keeps a single noisy client from using the global budget up for others.
const (
	defaultSignInRate        = rate.Limit(1.0 / 3) // one every 3s per address
	defaultSignInBurst       = 10
	defaultSignInGlobalRate  = rate.Limit(10)
	defaultSignInGlobalBurst = 100
	// maxSignInAddrs bounds the addresses remembered; beyond it the least
	// recently seen is forgotten (its bucket refills early, which the
	// global bucket still caps).
	maxSignInAddrs = 10_000
)

// signInLimiter is a token bucket per client address plus one for all of
// them, in bounded memory.
type signInLimiter struct {
	mu     sync.Mutex
	now    func() time.Time
	per    rate.Limit
	burst  int
	max    int
	global *rate.Limiter
	m      map[string]*limiterEntry
}

// signInLimiterFor builds the limiter of opts, with the defaults above.
func signInLimiterFor(opts Options) *signInLimiter {
	return newSignInLimiter(cmp.Or(opts.SignInRate, defaultSignInRate), cmp.Or(opts.SignInBurst, defaultSignInBurst),
		cmp.Or(opts.SignInGlobalRate, defaultSignInGlobalRate), cmp.Or(opts.SignInGlobalBurst, defaultSignInGlobalBurst), opts.Now)
}

func newSignInLimiter(per rate.Limit, burst int, global rate.Limit, globalBurst int, now func() time.Time) *signInLimiter {
	return &signInLimiter{now: now, per: per, burst: burst, max: maxSignInAddrs,
		global: rate.NewLimiter(global, globalBurst), m: map[string]*limiterEntry{}}
}

// allow reports whether addr may try to sign in now; if not, how long to
// wait and whether the global bucket (all clients) is what refused.
func (l *signInLimiter) allow(addr string) (ok bool, wait time.Duration, global bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e := l.m[addr]
	if e == nil {
		if len(l.m) >= l.max {
			l.forget(now)
		}
		e = &limiterEntry{lim: rate.NewLimiter(l.per, l.burst)}
		l.m[addr] = e
	}
	e.seen = now
	res := e.lim.ReserveN(now, 1)
	if !res.OK() {
		return false, time.Minute, false
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d, false
	}
	g := l.global.ReserveN(now, 1)
	if !g.OK() {
		res.CancelAt(now)
		return false, time.Minute, true
	}
	if d := g.DelayFrom(now); d > 0 {
		g.CancelAt(now)
		res.CancelAt(now)
		return false, d, true
	}
	return true, 0, false
}

// forget drops the addresses whose bucket is full again (they would start
// afresh anyway) and, if none is, the least recently seen one.
func (l *signInLimiter) forget(now time.Time) {
	full := time.Duration(float64(l.burst) / float64(l.per) * float64(time.Second))
	var oldest string
	var at time.Time
	for k, e := range l.m {
		if now.Sub(e.seen) > full {
			delete(l.m, k)
			continue
		}
		if oldest == "" || e.seen.Before(at) {
			oldest, at = k, e.seen
		}
	}
	if len(l.m) >= l.max {
		delete(l.m, oldest)
	}
}

// len is the number of addresses remembered.
func (l *signInLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// limitSignIn answers a sign-in attempt the limiter refuses (429 with
// Retry-After and the sign-in page saying which limit); refused is false
// when the attempt may go on.
func (s *Server) limitSignIn(w http.ResponseWriter, c *caller) (refused bool, err error) {
	ok, wait, global := s.signIns.allow(c.source)
	if ok {
		return false, nil
	}
	who := "from " + c.source
	if global {
		who = "on this server (all clients)"
	}
	wait = max(wait, time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds()+0.999)))
	return true, s.renderSignIn(w, http.StatusTooManyRequests, fmt.Sprintf("too many sign-in attempts %s: retry in %s", who, wait.Round(time.Second)))
}
