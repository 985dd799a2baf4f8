package fleetsim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/nkudo/nkudo/api"
)

// DefaultStormBound bounds the reconnect storm when Options.StormBound is
// zero: an agent without an acknowledged heartbeat by then gave up.
const DefaultStormBound = 5 * time.Minute

// errClass is a kind of failed agent request, as the agent sees it.
type errClass int

const (
	errRefused  errClass = iota // nothing listens: the control plane is down
	errTLSReset                 // TLS handshake failed or timed out, connection reset or cut
	errOverload                 // HTTP 503 or 429: the control plane shed load
	errOther
	numErrClasses
)

// classify sorts a failed agent request. It looks at the error's chain, with
// the message as the last resort for net/http's unexported handshake
// timeout.
func classify(err error) errClass {
	var ae *api.Error
	var alert tls.AlertError
	var header tls.RecordHeaderError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return errRefused
	case errors.As(err, &ae):
		if ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusTooManyRequests {
			return errOverload
		}
		return errOther
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.As(err, &alert), errors.As(err, &header), strings.Contains(err.Error(), "TLS handshake"):
		return errTLSReset
	}
	return errOther
}

// StormErrors are the agents' failed requests (heartbeats, plan polls,
// reports) during a storm, by kind.
type StormErrors struct {
	Refused    int64 `json:"refused"`
	TLSOrReset int64 `json:"tlsOrReset"`
	Overloaded int64 `json:"overloaded"`
	Other      int64 `json:"other"`
}

// Storm is the reconnect storm: the whole control plane restarted at once
// (ControlPlane.Restart) with every agent connected. Its times run from the
// moment the control plane was down (every replica stopped, none started).
type Storm struct {
	// Stop is how long stopping took; Ready is stopped → every replica
	// ready again.
	Stop  Seconds `json:"stop"`
	Ready Seconds `json:"ready"`
	// AllConnected is stopped → the last agent's first acknowledged
	// heartbeat after the restart (0 when an agent gave up); Reconnect is
	// that time per agent, over the agents that came back.
	AllConnected Seconds `json:"allConnected"`
	Reconnect    Dist    `json:"reconnect"`
	// HeartbeatErrors is the failed heartbeats from the stop until every
	// agent came back (or the bound ran out); RequestErrors the failed
	// agent requests of every kind (heartbeats, plan polls, reports) in
	// that time, and Errors sorts those.
	HeartbeatErrors int64       `json:"heartbeatErrors"`
	RequestErrors   int64       `json:"requestErrors"`
	Errors          StormErrors `json:"errors"`
	// GaveUp is how many agents had no acknowledged heartbeat when Bound ran out.
	GaveUp int     `json:"gaveUp"`
	Bound  Seconds `json:"bound"`
	// NotHolding is how many sites' hypervisors did not hold their desired
	// VMs once the agents were back (0 is right).
	NotHolding int `json:"notHolding"`
}

// storm restarts the control plane and waits, within the bound, until
// every agent has had a heartbeat acknowledged by the restarted one.
func (s *sim) storm(ctx context.Context) (*Storm, error) {
	s.phase.Store("reconnect-storm")
	bound := s.o.StormBound
	if dl, ok := ctx.Deadline(); ok {
		bound = min(bound, time.Until(dl))
	}
	st := &Storm{Bound: Seconds(bound.Seconds())}
	errsBefore, classesBefore := s.heartbeatErrors(), s.errClasses()
	for _, site := range s.sites {
		site.reconnected.Store(0)
	}
	s.converged.Store(0)
	// The bound covers the restart too: a control plane that does not come
	// back leaves every agent without an answer.
	bctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	start := time.Now()
	var down time.Time
	err := s.o.ControlPlane.Restart(bctx, func() {
		down = time.Now()
		// From here on an acknowledged heartbeat can only come from the
		// restarted control plane.
		s.downAt.Store(down.UnixNano())
	})
	if err != nil {
		return st, fmt.Errorf("reconnect storm: restart the control plane: %w", err)
	}
	if down.IsZero() {
		return st, errors.New("reconnect storm: the control plane restarted without saying when it was down")
	}
	st.Stop = Seconds(down.Sub(start).Seconds())
	st.Ready = Seconds(time.Since(down).Seconds())

	waitErr := s.waitFor(bctx, "every agent reconnected", func() (bool, string) {
		n := 0
		for _, site := range s.sites {
			if site.reconnected.Load() != 0 {
				n++
			}
		}
		s.converged.Store(int64(n))
		return n == len(s.sites), fmt.Sprintf("%d/%d agents reconnected", n, len(s.sites))
	})
	if waitErr != nil && errors.Is(ctx.Err(), context.Canceled) {
		// The run was cancelled; a deadline, the run's or the bound, is
		// the bound running out: the agents not back gave up.
		return st, waitErr
	}
	var times []time.Duration
	for _, site := range s.sites {
		at := site.reconnected.Load()
		if at == 0 {
			st.GaveUp++
			continue
		}
		times = append(times, time.Unix(0, at).Sub(down))
	}
	st.Reconnect = distribution(times)
	if st.GaveUp == 0 {
		st.AllConnected = st.Reconnect.Max
	}
	st.HeartbeatErrors = s.heartbeatErrors() - errsBefore
	after := s.errClasses()
	for i := range after {
		st.RequestErrors += after[i] - classesBefore[i]
	}
	st.Errors = StormErrors{
		Refused:    after[errRefused] - classesBefore[errRefused],
		TLSOrReset: after[errTLSReset] - classesBefore[errTLSReset],
		Overloaded: after[errOverload] - classesBefore[errOverload],
		Other:      after[errOther] - classesBefore[errOther],
	}
	// The fleet is still the one it was: no site lost or regained a VM.
	for _, site := range s.sites {
		if !site.hv.Matches(site.want()) {
			st.NotHolding++
		}
	}
	return st, nil
}

func (s *sim) heartbeatErrors() int64 {
	var n int64
	for _, st := range s.sites {
		n += st.hbErrors.Load()
	}
	return n
}

func (s *sim) errClasses() [numErrClasses]int64 {
	var out [numErrClasses]int64
	for i := range out {
		out[i] = s.errs[i].Load()
	}
	return out
}

// ConnectedRSS is the control plane's current resident memory at three
// moments: started, before any site enrolled; every agent connected (its
// first heartbeat acknowledged), before any commit; and after the
// reconnect storm settled.
type ConnectedRSS struct {
	BeforeBytes     int64 `json:"beforeBytes"`
	ConnectedBytes  int64 `json:"connectedBytes"`
	AfterStormBytes int64 `json:"afterStormBytes,omitempty"`
	// PerAgentBytes is (connected − before) ÷ sites.
	PerAgentBytes int64 `json:"perAgentBytes"`
	// Note says what was measured (in-process figures include the agents).
	Note string `json:"note,omitempty"`
}

// rss reads the control plane's current RSS; 0 when it is not reported.
func (s *sim) rss() (int64, string, error) {
	if s.o.ControlPlane.RSS == nil {
		return 0, "", nil
	}
	return s.o.ControlPlane.RSS()
}
