package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/store"
)

// TestLogBounds: over real TLS, an agent's long line is stored cut with a
// marker; a plan's log stops at its quota with the lines beyond counted
// and the agent told; gaps are still reported; a user's page is bounded in
// bytes and its cursor leads through every stored line.
func TestLogBounds(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		const (
			lineCap  = 1024
			pageCap  = 4096
			lineSize = 1000
		)
		planQuota := int64(20 * (lineSize + store.LogLineOverhead))
		o.Configure = func(co *controlplane.Options) {
			co.MaxLogLineBytes = lineCap
			co.LogPlanQuotaBytes = planQuota
			co.MaxLogPageBytes = pageCap
		}
		env := cptest.Start(t, o)
		acme := env.NewTenant("acme")
		agent := env.Enroll("acme", "s1")
		newPlan := func(vm string) string {
			p := cptest.CreatePlan("acme", "s1", 0, vm)
			if _, err := env.Store().StorePlan(t.Context(), store.Actor{Kind: store.ActorSystem, ID: "test"}, p, "", time.Now()); err != nil {
				t.Fatal(err)
			}
			return p.ID
		}
		send := func(lines ...api.LogLine) api.LogsResponse {
			t.Helper()
			resp, err := agent.Client.SendLogs(t.Context(), lines)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}
		line := func(plan string, seq int64, text string) api.LogLine {
			return api.LogLine{PlanID: plan, Seq: seq, Stream: api.StreamStdout, Line: text}
		}

		// A 100 KiB line is cut to the cap, with a marker.
		p1 := newPlan("vm-a")
		if r := send(line(p1, 1, strings.Repeat("é", 50<<10))); r.Accepted != 1 || r.Truncated != 1 {
			t.Errorf("long line: %+v, want accepted and truncated", r)
		}
		page, err := acme.Client.Logs(t.Context(), p1, 0)
		if err != nil || len(page.Lines) != 1 {
			t.Fatalf("page of the cut line: %v %+v", err, page)
		}
		got := page.Lines[0].Line
		if len(got) > lineCap || !strings.HasSuffix(got, "[line truncated: "+fmt.Sprint(100<<10-strings.Index(got, " … ["))+" bytes cut]") || !strings.HasPrefix(got, "éé") {
			t.Errorf("cut line (%d bytes) ends %q", len(got), got[max(0, len(got)-60):])
		}

		// Gaps are reported from sequence numbers.
		if r := send(line(p1, 4, "four")); !cmp.Equal(r.Gaps, []api.LogGap{{PlanID: p1, From: 2, To: 3}}) {
			t.Errorf("gaps after seq 4: %+v, want 2-3", r.Gaps)
		}

		// The plan quota: 20 lines fit, the rest are dropped and counted.
		p2 := newPlan("vm-b")
		var batch []api.LogLine
		for i := 1; i <= 30; i++ {
			batch = append(batch, line(p2, int64(i), fmt.Sprintf("%04d%s", i, strings.Repeat("x", lineSize-4))))
		}
		r := send(batch...)
		if r.Accepted != 20 || r.Dropped != 10 || !cmp.Equal(r.Closed, []api.LogClosed{{PlanID: p2, Quota: "plan", LimitBytes: planQuota}}) {
			t.Errorf("over the plan quota: accepted %d, dropped %d, closed %+v", r.Accepted, r.Dropped, r.Closed)
		}
		if r := send(line(p2, 31, "small")); r.Accepted != 0 || r.Dropped != 1 {
			t.Errorf("a line after the log closed: %+v, want dropped", r)
		}

		// Pages are bounded in bytes; the cursor leads through all 20 lines.
		var after int64
		var seqs []int64
		pages := 0
		for {
			page, err := acme.Client.Logs(t.Context(), p2, after)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			size := 0
			for _, l := range page.Lines {
				size += len(l.Line)
				seqs = append(seqs, l.Seq)
			}
			if size > pageCap {
				t.Errorf("page after %d holds %d bytes of lines, over %d", after, size, pageCap)
			}
			if page.Next == 0 {
				if diff := cmp.Diff(&api.LogDropped{Lines: 11, Bytes: 10*lineSize + 5, Quota: "plan"}, page.Dropped); diff != "" {
					t.Errorf("last page's dropped count (-want +got):\n%s", diff)
				}
				break
			}
			after = page.Next
		}
		if len(seqs) != 20 || seqs[19] != 20 || pages != 5 {
			t.Errorf("paged through %d lines (last %v) in %d pages, want 20 in 5", len(seqs), seqs[len(seqs)-1:], pages)
		}
	})
}
