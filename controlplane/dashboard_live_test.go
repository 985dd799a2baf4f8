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
