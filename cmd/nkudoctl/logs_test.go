package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/store"
)

// TestLogsFollowsPageCursor: with pages bounded to one line by the server,
// `nkudoctl logs` follows the page cursor to the last stored line and then
// says how many lines the server dropped at the plan's log quota.
func TestLogsFollowsPageCursor(t *testing.T) {
	const lineBytes = 60
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) {
		o.MaxLogPageBytes = lineBytes + 10
		o.LogPlanQuotaBytes = 8 * (lineBytes + store.LogLineOverhead)
	}})
	acme := env.NewTenant("acme")
	agent := env.Enroll("acme", "s1")
	plan := cptest.CreatePlan("acme", "s1", 0, "vm-a")
	if _, err := env.Store().StorePlan(t.Context(), store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	var lines []api.LogLine
	for i := 1; i <= 10; i++ {
		lines = append(lines, api.LogLine{PlanID: plan.ID, Seq: int64(i), Stream: api.StreamStdout, Line: fmt.Sprintf("line-%02d-%s", i, strings.Repeat("x", lineBytes-8))})
	}
	resp, err := agent.Client.SendLogs(t.Context(), lines)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != 8 || resp.Dropped != 2 {
		t.Fatalf("SendLogs: %+v, want 8 accepted and 2 dropped", resp)
	}
	page, err := acme.Client.Logs(t.Context(), plan.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Lines) != 1 || page.Next != 1 {
		t.Fatalf("first page: %d lines, next %d; want 1 line and next 1", len(page.Lines), page.Next)
	}

	t.Setenv("NKUDO_CONFIG", filepath.Join(t.TempDir(), "config.json"))
	t.Setenv("NKUDO_SERVER", "")
	t.Setenv("NKUDO_TOKEN", "")
	if code, out, errs := nkudoctl(t, "login", env.URL, "--token", acme.Token, "--ca-hash", env.CAFingerprint); code != 0 {
		t.Fatalf("login: %d %s %s", code, out, errs)
	}
	code, out, errs := nkudoctl(t, "logs", plan.ID)
	if code != 0 {
		t.Fatalf("logs: %d %s %s", code, out, errs)
	}
	for i := 1; i <= 8; i++ {
		if !strings.Contains(out, fmt.Sprintf("line-%02d-", i)) {
			t.Errorf("output lacks line %d:\n%s", i, out)
		}
	}
	if strings.Contains(out, "line-09-") {
		t.Errorf("output has a dropped line:\n%s", out)
	}
	if !strings.Contains(out, "2 more lines (120 bytes) were dropped: the plan log quota was reached") {
		t.Errorf("output lacks the dropped-lines marker:\n%s", out)
	}
}
