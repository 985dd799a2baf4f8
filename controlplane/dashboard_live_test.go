package controlplane_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/store"
)

// sseEvent is one Server-Sent Event.
type sseEvent struct{ name, id, data string }

// openStream opens an event stream of the session (with extra request
// headers) and returns a function reading its next event.
func openStream(t *testing.T, env *cptest.Env, b *cptest.Browser, path string, header http.Header) func() sseEvent {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", env.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(b.Cookie)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := b.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rd := bufio.NewReader(resp.Body)
	return func() sseEvent {
		t.Helper()
		var ev sseEvent
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("stream %s ended: %v (event so far %+v)", path, err, ev)
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "" && ev.name != "":
				return ev
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "id: "):
				ev.id = line[len("id: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}
}

func logLines(t *testing.T, ev sseEvent) []ui.LogRow {
	t.Helper()
	if ev.name != "log" {
		t.Fatalf("event %q, want log: %s", ev.name, ev.data)
	}
	var le ui.LogEvent
	if err := json.Unmarshal([]byte(ev.data), &le); err != nil {
		t.Fatal(err)
	}
	return le.Lines
}

// TestDashboardPlanStreamFollowsTheLog: the plan page shows the log so
// far, and its stream sends the lines that arrive after, woken by the
// store's log signal, a bounded page per event, resuming after
// Last-Event-ID on reconnect.
func TestDashboardPlanStreamFollowsTheLog(t *testing.T) {
	env, _, plan, b := dashboardWithPlan(t)
	ctx := t.Context()
	appendLines := func(from, n int) {
		t.Helper()
		var lines []store.LogLine
		for i := from; i < from+n; i++ {
			lines = append(lines, store.LogLine{PlanID: plan.ID, ActionID: plan.Actions[0].ID, Seq: int64(i), Time: time.Now(), Stream: store.StreamStdout, Line: fmt.Sprintf("line <%d>", i)})
		}
		if _, err := env.Store().AppendLogs(ctx, "acme", "store-1", lines); err != nil {
			t.Fatal(err)
		}
	}
	appendLines(1, 2)
	if status, site := b.Get("/ui/sites/store-1"); status != http.StatusOK || !strings.Contains(site, `id="running-plan">Plan <a href="/ui/plans/`+plan.ID+`"`) {
		t.Errorf("the site page does not lead to its running plan: %d", status)
	}
	status, page := b.Get(api.Path(ui.PathPlan, plan.ID))
	if status != http.StatusOK || !strings.Contains(page, "line &lt;2&gt;") || !strings.Contains(page, `/events?log=2"`) {
		t.Fatalf("plan page: %d, want lines 1-2 and a stream continuing after 2\n%s", status, page)
	}

	next := openStream(t, env, b, api.Path(ui.PathEvents, plan.ID)+"?log=2", nil)
	if ev := next(); ev.name != "plan" {
		t.Fatalf("first event %+v, want plan", ev)
	}
	// Lines arriving later wake the stream; a burst larger than a page
	// comes as several bounded events.
	appendLines(3, ui.LogPageLines+10)
	got := logLines(t, next())
	if len(got) != ui.LogPageLines || got[0].Seq != 3 || got[0].Line != "line <3>" {
		t.Fatalf("first log event: %d lines from %+v, want %d from seq 3", len(got), got[0], ui.LogPageLines)
	}
	ev := next()
	rest := logLines(t, ev)
	last := int64(ui.LogPageLines + 12)
	if len(rest) != 10 || rest[9].Seq != last || ev.id != fmt.Sprint(last) {
		t.Fatalf("second log event: %d lines ending %+v, id %s; want 10 ending at %d", len(rest), rest[len(rest)-1], ev.id, last)
	}

	// A reconnecting browser sends the last id it saw and gets only newer lines.
	again := openStream(t, env, b, api.Path(ui.PathEvents, plan.ID)+"?log=2", http.Header{"Last-Event-Id": {fmt.Sprint(last - 1)}})
	if ev := again(); ev.name != "plan" {
		t.Fatalf("first event after reconnect %+v", ev)
	}
	if got := logLines(t, again()); len(got) != 1 || got[0].Seq != last {
		t.Errorf("after reconnect: %+v, want only seq %d", got, last)
	}
	if status, _ := b.Get(api.Path(ui.PathEvents, plan.ID) + "?log=x"); status != http.StatusBadRequest {
		t.Errorf("log=x: %d, want 400", status)
	}
}

// fleetUpdate reads the next "sites" event of a fleet stream.
func fleetUpdate(t *testing.T, next func() sseEvent) fleetEventView {
	t.Helper()
	ev := next()
	if ev.name != "sites" {
		t.Fatalf("event %q, want sites: %s", ev.name, ev.data)
	}
	var f fleetEventView
	if err := json.Unmarshal([]byte(ev.data), &f); err != nil {
		t.Fatal(err)
	}
	return f
}

type fleetEventView struct {
	Online int `json:"online"`
	Total  int `json:"total"`
	Sites  []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		Agent string `json:"agent"`
		Plan  *struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"plan"`
	} `json:"sites"`
}

func (f fleetEventView) names() []string {
	var out []string
	for _, s := range f.Sites {
		out = append(out, s.Name+"="+s.State)
	}
	return out
}

// TestDashboardFleetStream: the fleet stream sends every row when it
// opens, then only the rows that changed, woken by a heartbeat that brings
// a site online, a stored plan, and another tenant's changes not at all.
func TestDashboardFleetStream(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	ctx := t.Context()
	acme := env.NewTenant("acme")
	env.NewTenant("bravo")
	e1, e2 := env.Enroll("acme", "edge-1"), env.Enroll("acme", "edge-2")
	b1 := env.Enroll("bravo", "bravo-1")
	if _, err := e1.Client.Heartbeat(ctx, api.HeartbeatRequest{Facts: api.HostFacts{AgentVersion: "v1"}}); err != nil {
		t.Fatal(err)
	}
	b := env.SignInDashboard(acme.Token, "")
	if status, page := b.Get(ui.PathFleet); status != http.StatusOK || !strings.Contains(page, `data-events="/ui/fleet/events"`) {
		t.Fatalf("fleet page: %d, no event stream", status)
	}
	next := openStream(t, env, b, ui.PathFleetEvents, nil)
	first := fleetUpdate(t, next)
	if got := strings.Join(first.names(), " "); got != "edge-1=online edge-2=never" || first.Online != 1 || first.Total != 2 {
		t.Fatalf("first event: %s, %d of %d online; want both rows, edge-1 online", got, first.Online, first.Total)
	}

	// Bravo's heartbeat wakes bravo's fleet, not acme's: acme's next event
	// is edge-2 coming online, and only edge-2.
	if _, err := b1.Client.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e2.Client.Heartbeat(ctx, api.HeartbeatRequest{Facts: api.HostFacts{AgentVersion: "v2"}}); err != nil {
		t.Fatal(err)
	}
	up := fleetUpdate(t, next)
	if got := strings.Join(up.names(), " "); got != "edge-2=online" || up.Online != 2 || up.Sites[0].Agent != "v2" {
		t.Fatalf("after edge-2's first heartbeat: %s (%d online), want only edge-2 online with agent v2", got, up.Online)
	}

	// A plan stored for edge-1 (by the reconciler, through the store)
	// shows on edge-1's row.
	plan := cptest.CreatePlan("acme", "edge-1", 1, "pos-1")
	if _, err := env.Store().StorePlan(ctx, store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	pl := fleetUpdate(t, next)
	if len(pl.Sites) != 1 || pl.Sites[0].Name != "edge-1" || pl.Sites[0].Plan == nil || pl.Sites[0].Plan.ID != plan.ID || pl.Sites[0].Plan.Status != "pending" {
		t.Fatalf("after a plan for edge-1: %+v", pl.Sites)
	}
}

// TestDashboardFleetStreamShowsSitesGoingOffline: a site whose heartbeats
// stop sends no signal; the stream wakes at its deadline and shows it
// offline.
func TestDashboardFleetStreamShowsSitesGoingOffline(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) {
		o.MinHeartbeatInterval, o.HeartbeatGrace = time.Second, time.Second
	}})
	acme := env.NewTenant("acme")
	e1 := env.Enroll("acme", "edge-1")
	if _, err := e1.Client.Heartbeat(t.Context(), api.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	b := env.SignInDashboard(acme.Token, "")
	next := openStream(t, env, b, ui.PathFleetEvents, nil)
	for {
		f := fleetUpdate(t, next)
		if len(f.Sites) == 1 && f.Sites[0].State == "offline" && f.Online == 0 {
			return
		}
		if len(f.Sites) != 1 || f.Sites[0].State != "online" {
			t.Fatalf("event %+v: want edge-1 online, then offline", f)
		}
	}
}
