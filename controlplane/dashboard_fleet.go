package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/store"
)

// The fleet page's event stream. It is woken by the tenant's fleet topic
// (store.FleetTopic): the store notifies it with every plan change, and
// the control plane after heartbeats that change what the fleet shows
// and after action reports. Sites going offline send no signal, so the
// stream also wakes when the first online site's heartbeat deadline
// passes. On each wake-up it reads the fleet once and sends the rows
// that changed.

// minFleetRead spaces the fleet reads of one stream: wake-ups closer
// together are coalesced, so a busy tenant costs each open fleet page at
// most one read per second.
const minFleetRead = time.Second

// wakeFleet notifies the tenant's fleet topic without waiting: the
// notifier writes it with the other pending wake-ups. A lost wake-up only
// delays a page, so a failure is logged there.
func (s *Server) wakeFleet(ctx context.Context, tenant string) {
	s.notes.notify(ctx, store.FleetTopic(tenant))
}

// heartbeatChangesFleet reports whether a heartbeat changes the site's row
// on the fleet page beyond its heartbeat age: its inventory changed, it
// was not online before, or its agent version changed.
func (s *Server) heartbeatChangesFleet(before store.Site, inventoryChanged bool, agentVersion string, now time.Time) bool {
	if inventoryChanged || before.LastHeartbeat.IsZero() {
		return true
	}
	iv := before.HeartbeatInterval
	if iv <= 0 {
		iv = s.opts.MinHeartbeatInterval
	}
	if now.Sub(before.LastHeartbeat) > iv+s.opts.HeartbeatGrace {
		return true // it comes back online
	}
	f := facts(before)
	return f == nil || f.AgentVersion != agentVersion
}

// fleetRowEvent is one site's row as the fleet stream sends it.
type fleetRowEvent struct {
	Name      string          `json:"name"`
	State     string          `json:"state"`
	Heartbeat string          `json:"heartbeat"`
	Agent     string          `json:"agent"`
	VMTotal   int             `json:"vmTotal"`
	VMs       []fleetVMCount  `json:"vms"`
	Plan      *fleetPlanEvent `json:"plan"`
	key       string          // what decides a change: everything but the heartbeat's age
}

type fleetVMCount struct {
	State string `json:"state"`
	N     int    `json:"n"`
}

type fleetPlanEvent struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Ago    string `json:"ago"`
}

// fleetEvent is what a "sites" event carries: the changed rows and the
// tenant's totals.
type fleetEvent struct {
	Sites  []fleetRowEvent `json:"sites"`
	Online int             `json:"online"`
	Total  int             `json:"total"`
}

func fleetRow(r ui.SiteRow, now time.Time) fleetRowEvent {
	e := fleetRowEvent{Name: r.Name, State: r.State(), Heartbeat: "never", Agent: "—", VMTotal: r.VMTotal}
	if !r.LastSeen.IsZero() {
		e.Heartbeat = ui.Dur(r.Lag) + " ago"
	}
	if r.AgentVersion != "" {
		e.Agent = r.AgentVersion
	}
	for st, n := range r.VMs {
		e.VMs = append(e.VMs, fleetVMCount{State: strings.ToLower(string(st)), N: n})
	}
	slices.SortFunc(e.VMs, func(a, b fleetVMCount) int { return strings.Compare(a.State, b.State) })
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%s|%d|%v", e.State, e.Agent, e.VMTotal, e.VMs)
	if p := r.LastPlan; p != nil {
		e.Plan = &fleetPlanEvent{ID: p.ID, Status: string(p.Status), Ago: ui.Ago(now, p.UpdatedAt)}
		fmt.Fprintf(&b, "|%s|%s|%d", p.ID, p.Status, p.UpdatedAt.UnixNano())
	}
	e.key = b.String()
	return e
}

// offlineAt is when the first of the online rows turns offline without a
// heartbeat (zero when none is online).
func (s *Server) offlineAt(sites []store.Site, now time.Time) time.Time {
	var first time.Time
	for _, st := range sites {
		if st.LastHeartbeat.IsZero() {
			continue
		}
		iv := st.HeartbeatInterval
		if iv <= 0 {
			iv = s.opts.MinHeartbeatInterval
		}
		at := st.LastHeartbeat.Add(iv + s.opts.HeartbeatGrace)
		if at.After(now) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

// handleFleetEvents streams the fleet page's changes as Server-Sent
// Events: a "sites" event with every row when it opens (the page may be
// older than the stream), then one with the rows that changed after each
// wake-up that changed any. It stops with the session, the request or the server.
func (s *Server) handleFleetEvents(w http.ResponseWriter, r *http.Request, c *caller) error {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if !c.session.OpenStream() {
		return &httpError{status: http.StatusTooManyRequests, code: api.CodeRateLimited, retryAfter: 5 * time.Second,
			msg: fmt.Sprintf("this session has %d event streams open already: close a tab", ui.MaxStreams)}
	}
	defer c.session.CloseStream()
	wake, unsub := s.store.Subscribe(ctx, store.FleetTopic(c.tenant))
	defer unsub()
	endCh, unsubEnd := s.store.Subscribe(ctx, sessionTopic(c.sessionKey))
	defer unsubEnd()

	ui.SecurityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(event string, data []byte) error {
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return err
		}
		return rc.Flush()
	}
	keep := time.NewTicker(streamKeepAlive)
	defer keep.Stop()
	sent := map[string]string{} // site → key of the row last sent
	first := true               // the first event is sent even when empty: the page knows it is live
	for {
		if !s.streamSessionLive(ctx, c) {
			_ = send("end", []byte(`{"reason":"the session ended (signed out, or its API token was deleted or expired)"}`))
			return nil
		}
		now := s.now()
		sites, err := s.store.ListSites(ctx, c.tenant)
		if err != nil {
			return nil // headers are sent; the browser reconnects
		}
		page, err := s.fleetPageOf(ctx, c.tenant, sites, ui.FleetQuery{Sort: "name"}, now)
		if err != nil {
			return nil
		}
		ev := fleetEvent{Online: page.Online, Total: page.Total, Sites: []fleetRowEvent{}}
		seen := make(map[string]bool, len(page.Rows))
		for _, row := range page.Rows {
			e := fleetRow(row, now)
			seen[e.Name] = true
			if sent[e.Name] != e.key {
				ev.Sites = append(ev.Sites, e)
				sent[e.Name] = e.key
			}
		}
		for name := range sent {
			if !seen[name] {
				delete(sent, name) // a deleted site; a page reload drops its row
			}
		}
		if len(ev.Sites) > 0 || first {
			first = false
			b, err := json.Marshal(ev)
			if err != nil || send("sites", b) != nil {
				return nil
			}
		}
		read := time.Now()
		// Sleep out the rest of the read spacing, then wait for a signal or
		// the first online site's deadline.
		var deadline <-chan time.Time
		var timer *time.Timer
		if at := s.offlineAt(sites, now); !at.IsZero() {
			timer = time.NewTimer(at.Sub(now) + 10*time.Millisecond)
			deadline = timer.C
		}
		ok := s.waitFleet(ctx, w, rc, c, keep.C, endCh, wake, deadline)
		if timer != nil {
			timer.Stop()
		}
		if !ok {
			if isClosed(c.session.Done()) {
				_ = send("end", []byte(`{"reason":"signed out"}`))
			}
			return nil
		}
		if d := minFleetRead - time.Since(read); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil
			case <-s.shutdown:
				return nil
			case <-c.session.Done():
				_ = send("end", []byte(`{"reason":"signed out"}`))
				return nil
			}
		}
	}
}

// waitFleet blocks until the fleet may have changed (true) or the stream
// must stop (false); keep-alives are written while waiting.
func (s *Server) waitFleet(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, c *caller, keep <-chan time.Time, endCh, wake <-chan struct{}, deadline <-chan time.Time) bool {
	return s.waitStream(ctx, w, rc, c, keep, endCh, wake, nil, nil, deadline)
}
