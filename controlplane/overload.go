package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nkudo/nkudo/api"
)

// Overload protection for reconnect storms: when a control plane restarts,
// or a network path comes back, thousands of agents reconnect within
// seconds. Two bounds keep the server answering instead of timing out: the
// TLS handshakes in progress (each costs CPU; beyond the bound a new one
// waits briefly for a slot, then fails) and the agent requests being
// served (beyond it an agent gets 503 with a spread Retry-After, which the
// agent waits out). A plan long-poll counts only until it parks: parked
// polls cost a goroutine and no CPU.

// Defaults of Options.MaxAgentRequests and Options.MaxHandshakes.
const (
	DefaultMaxAgentRequests = 256
	DefaultMaxHandshakes    = 64
)

// handshakeWait is how long a TLS handshake waits for a slot before it
// fails: long enough that a queue of handshakes drains at CPU speed, short
// of the 10 s a client gives a handshake.
const handshakeWait = 3 * time.Second

// overloadRetryAfter bounds the Retry-After of an overload answer: drawn
// from [1s, overloadRetryAfter] so the refused agents come back spread.
const overloadRetryAfter = 10 * time.Second

// overload holds both bounds; a nil slot channel is no bound.
type overload struct {
	agent chan struct{}
	// heartbeats is a reserve of a quarter of the agent bound that only
	// heartbeats may take once agent is full: a rollout's result uploads
	// must not refuse the heartbeats that say the sites are alive.
	heartbeats chan struct{}
	handshakes chan struct{}
	refused    *prometheus.CounterVec

	mu      sync.Mutex
	pending map[net.Conn]func() // handshakes holding a slot, by raw connection
}

func newOverload(agentMax, handshakeMax int, reg *prometheus.Registry) (*overload, error) {
	o := &overload{pending: map[net.Conn]func(){}}
	if agentMax == 0 {
		agentMax = DefaultMaxAgentRequests
	}
	if handshakeMax == 0 {
		handshakeMax = DefaultMaxHandshakes
	}
	if agentMax > 0 {
		o.agent = make(chan struct{}, agentMax)
		o.heartbeats = make(chan struct{}, max(1, agentMax/4))
	}
	if handshakeMax > 0 {
		o.handshakes = make(chan struct{}, handshakeMax)
	}
	o.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nkudo_overload_refused_total",
		Help: "Agent requests answered 503 (what=agent_request) and TLS handshakes failed (what=tls_handshake) at the overload bounds.",
	}, []string{"what"})
	if err := reg.Register(o.refused); err != nil {
		return nil, fmt.Errorf("register metric: %w", err)
	}
	return o, nil
}

// enterAgent takes an agent-request slot (a heartbeat may also take one
// of the reserve), or answers 503 with Retry-After. release is idempotent.
func (o *overload) enterAgent(heartbeat bool) (release func(), err error) {
	if o.agent == nil {
		return func() {}, nil
	}
	take := func(slots chan struct{}) bool {
		select {
		case slots <- struct{}{}:
			var once sync.Once
			release = func() { once.Do(func() { <-slots }) }
			return true
		default:
			return false
		}
	}
	switch {
	case take(o.agent), heartbeat && take(o.heartbeats):
		return release, nil
	default:
		o.refused.WithLabelValues("agent_request").Inc()
		return func() {}, &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable,
			msg: "too many agent requests in progress; retry after the Retry-After delay", retryAfter: spreadRetryAfter()}
	}
}

// spreadRetryAfter is a whole-second Retry-After drawn from [1s,
// overloadRetryAfter], so the refused agents come back spread.
func spreadRetryAfter() time.Duration {
	return (time.Second + rand.N(overloadRetryAfter-time.Second+1)).Truncate(time.Second)
}

// parkKey carries the request's slot release to a long-poll that parks.
type parkKey struct{}

func withPark(ctx context.Context, release func()) context.Context {
	return context.WithValue(ctx, parkKey{}, release)
}

// parked gives the request's agent slot back: a waiting long-poll costs no
// CPU, and parked polls must not starve heartbeats.
func parked(ctx context.Context) {
	if release, ok := ctx.Value(parkKey{}).(func()); ok {
		release()
	}
}

// tlsConfig wraps base so that a handshake holds a slot from the client's
// hello until it completes (or its connection closes).
func (o *overload) tlsConfig(base *tls.Config) *tls.Config {
	if o.handshakes == nil {
		return base
	}
	tc := base.Clone()
	tc.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		t := time.NewTimer(handshakeWait)
		defer t.Stop()
		select {
		case o.handshakes <- struct{}{}:
		case <-t.C:
			o.refused.WithLabelValues("tls_handshake").Inc()
			return nil, errors.New("too many TLS handshakes in progress")
		case <-hello.Context().Done():
			return nil, hello.Context().Err()
		}
		var once sync.Once
		release := func() {
			once.Do(func() {
				<-o.handshakes
				o.mu.Lock()
				delete(o.pending, hello.Conn)
				o.mu.Unlock()
			})
		}
		o.mu.Lock()
		o.pending[hello.Conn] = release
		o.mu.Unlock()
		conf := base.Clone()
		conf.VerifyConnection = func(tls.ConnectionState) error { release(); return nil }
		return conf, nil
	}
	return tc
}

// connState releases the slot of a handshake that failed: its connection
// closes without VerifyConnection having run.
func (o *overload) connState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	o.handshakeFailed(raw)
}

// handshakeFailed releases the slot of the handshake on raw, if it holds
// one.
func (o *overload) handshakeFailed(raw net.Conn) {
	o.mu.Lock()
	release := o.pending[raw]
	o.mu.Unlock()
	if release != nil {
		release()
	}
}
