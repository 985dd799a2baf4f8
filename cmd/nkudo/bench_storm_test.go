package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/internal/fleetsim"
	"github.com/nkudo/nkudo/internal/pgtest"
)

// checkStorm asserts what a reconnect storm must show: every agent had a
// heartbeat acknowledged by the restarted control plane (none gave up),
// each one's time is there, and every site still holds its VMs.
func checkStorm(t *testing.T, rep fleetsim.Report, sites int) {
	t.Helper()
	st := rep.Storm
	if st == nil {
		t.Fatal("no reconnect storm in the report")
	}
	t.Logf("reconnect storm: stop %s, ready %s; all connected %s, per agent p50/p99/max %s; %d requests failed (%d heartbeats) %+v; connected RSS %+v",
		st.Stop, st.Ready, st.AllConnected, st.Reconnect, st.RequestErrors, st.HeartbeatErrors, st.Errors, rep.RSS)
	if st.GaveUp != 0 || st.Reconnect.N != sites {
		t.Errorf("reconnect storm: %d agents gave up, %d reconnected; want 0 and %d", st.GaveUp, st.Reconnect.N, sites)
	}
	if st.AllConnected <= 0 || st.Reconnect.Max != st.AllConnected || st.Reconnect.P50 <= 0 {
		t.Errorf("reconnect storm: all connected after %s, per agent %s; want the last agent's time, above 0", st.AllConnected, st.Reconnect)
	}
	if st.NotHolding != 0 {
		t.Errorf("reconnect storm: %d sites do not hold their VMs afterwards", st.NotHolding)
	}
	var sum int64
	for _, n := range []int64{st.Errors.Refused, st.Errors.TLSOrReset, st.Errors.Overloaded, st.Errors.Other} {
		sum += n
	}
	if sum != st.RequestErrors || st.HeartbeatErrors > st.RequestErrors {
		t.Errorf("reconnect storm: %d failed requests (%d heartbeats), sorted as %+v", st.RequestErrors, st.HeartbeatErrors, st.Errors)
	}
	m := rep.RSS
	if m == nil || m.BeforeBytes <= 0 || m.ConnectedBytes <= 0 || m.AfterStormBytes <= 0 {
		t.Fatalf("connected RSS: %+v, want before, connected and after-storm figures", m)
	}
	if m.PerAgentBytes != (m.ConnectedBytes-m.BeforeBytes)/int64(sites) {
		t.Errorf("connected RSS: %d bytes per agent, want (%d − %d) ÷ %d", m.PerAgentBytes, m.ConnectedBytes, m.BeforeBytes, sites)
	}
}

// TestReconnectStorm restarts the whole in-process control plane under 100
// connected agents with nothing committed (--no-changes): every agent
// comes back and the connected RSS is measured. A correctness check;
// nothing here is timed. The 1 s heartbeat interval keeps it short: the
// agents' first retry is spread over that interval.
func TestReconnectStorm(t *testing.T) {
	rep := benchFleet(t, "--sites=100", "--vms=1", "--no-changes", "--reconnect-storm", "--heartbeat-interval=1s", "--timeout=3m")
	if len(rep.Phases) != 0 || rep.HypervisorCalls != 0 {
		t.Errorf("--no-changes ran phases %+v with %d hypervisor calls", rep.Phases, rep.HypervisorCalls)
	}
	checkStorm(t, rep, 100)
	if !strings.Contains(rep.RSS.Note, "agents") {
		t.Errorf("in-process RSS note %q does not say the agents are included", rep.RSS.Note)
	}
}

// TestReconnectStormAfterRollout: 20 sites × 2 VMs through the whole
// scenario, then the control plane restarted: the agents come back to
// plans they have applied, and no action runs again (checkFleet counts
// every hypervisor call, across the restart).
func TestReconnectStormAfterRollout(t *testing.T) {
	rep := benchFleet(t, "--sites=20", "--vms=2", "--reconnect-storm", "--heartbeat-interval=1s", "--timeout=3m")
	checkFleet(t, rep, 20, 2)
	checkStorm(t, rep, 20)
}

// TestReconnectStormReplica: `nkudo serve` processes on Postgres (one,
// then three), every one killed with SIGKILL and started again; the agents
// come back, and the figures are read from the new processes (their pids
// differ).
func TestReconnectStormReplica(t *testing.T) {
	bin := buildNkudo(t)
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			rep := benchFleet(t, "--database-url", pgtest.URL(t), fmt.Sprintf("--replicas=%d", replicas), "--nkudo-binary", bin,
				"--sites=50", "--vms=1", "--no-changes", "--reconnect-storm", "--heartbeat-interval=1s", "--timeout=3m")
			checkStorm(t, rep, 50)
			if want := fmt.Sprintf("sum over %d replicas", replicas); (replicas > 1) != (rep.RSS.Note == want) {
				t.Errorf("RSS note of %d replicas: %q", replicas, rep.RSS.Note)
			}
			if rep.ControlPlane == nil || rep.ControlPlane.PeakRSSBytes <= 0 || rep.ControlPlane.CPUSeconds <= 0 {
				t.Errorf("control plane usage after the restart: %+v", rep.ControlPlane)
			}
		})
	}
}

// TestBenchFleetStormRefuses: --no-changes has no rollout to kill a replica in.
func TestBenchFleetStormRefuses(t *testing.T) {
	args := []string{"bench", "fleet", "--quiet", "--work-dir", t.TempDir(), "--replicas=2", "--database-url=postgres://127.0.0.1:1/none",
		"--kill-replica-after=5", "--no-changes"}
	code, _, errs := runCmd(t, t.Context(), args...)
	if want := "--no-changes has none"; code == 0 || !strings.Contains(errs, want) {
		t.Errorf("exit %d, stderr %q; want an error containing %q", code, errs, want)
	}
}

// TestReplicaSetRestart: a restart kills each replica and starts a new
// process with the same arguments in its slot; Kill, Usage and RSS then
// reach the new process, and the usage carries the old one's CPU time on.
func TestReplicaSetRestart(t *testing.T) {
	var set replicaSet
	t.Cleanup(set.stop)
	for i := range 2 {
		r, err := startReplica("sleep", []string{"600"}, filepath.Join(t.TempDir(), fmt.Sprintf("replica-%d.log", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		set.add(r)
	}
	old := set.all()
	old[0].mu.Lock()
	old[0].cpu = 7 // seconds, as if it had worked
	old[0].mu.Unlock()
	wasDown := false
	if err := set.restart(func() {
		for i, r := range old {
			if r.cmd.ProcessState == nil {
				t.Errorf("replica %d still running when down was called", i)
			}
		}
		wasDown = true
	}); err != nil {
		t.Fatal(err)
	}
	if !wasDown {
		t.Fatal("restart did not call down")
	}
	for i, r := range set.all() {
		if r == old[i] || r.cmd.Process.Pid == old[i].cmd.Process.Pid || strings.Join(r.args, " ") != "600" {
			t.Errorf("replica %d: pid %d (was %d), args %q; want a new process with the same arguments", i, r.cmd.Process.Pid, old[i].cmd.Process.Pid, r.args)
		}
	}
	if u := replicaUsage(set.all()); u.CPUSeconds < 7 {
		t.Errorf("usage after the restart: %.2f CPU seconds, want the killed process's 7 carried on", u.CPUSeconds)
	}
	if n, _, err := set.rss(); err != nil || n <= 0 {
		t.Errorf("RSS of the restarted replicas: %d, %v", n, err)
	}
	if err := set.get(1).kill(); err != nil {
		t.Fatal(err)
	}
	if err := set.get(1).kill(); err != nil {
		t.Errorf("killing a killed replica again: %v", err)
	}
}

// TestInProcessServerExitNotReady: a restarted in-process server that
// exits instead of serving is reported as such, with its log, rather than
// waited on until the readiness check gives up.
func TestInProcessServerExitNotReady(t *testing.T) {
	srv := &inProcessServer{args: []string{"serve", "--no-such-flag"}, logPath: filepath.Join(t.TempDir(), "serve.log")}
	if err := srv.start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	err := srv.ready(t.Context(), "https://127.0.0.1:1", nil)
	if err == nil || !strings.Contains(err.Error(), "nkudo serve exited with code 2") || !strings.Contains(err.Error(), "serve.log") {
		t.Errorf("ready of a server that exited: %v", err)
	}
}

// TestDatabaseSizeTakesPoolParameters: the URL that nkudo serve takes,
// pool parameters included, also measures the database's size.
func TestDatabaseSizeTakesPoolParameters(t *testing.T) {
	u := pgtest.URL(t)
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	n, err := databaseSize(t.Context(), u+sep+"pool_max_conns=4", "")
	if err != nil || n <= 0 {
		t.Fatalf("databaseSize with pool_max_conns: %d, %v; want a size", n, err)
	}
}
