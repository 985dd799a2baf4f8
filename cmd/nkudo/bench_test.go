package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/internal/fleetsim"
	"github.com/nkudo/nkudo/internal/pgtest"
)

// benchFleet runs `nkudo bench fleet` with args and -o json and returns its
// report; a non-zero exit fails the test with the command's output.
func benchFleet(t *testing.T, args ...string) fleetsim.Report {
	t.Helper()
	args = append([]string{"bench", "fleet", "-o", "json", "--quiet", "--work-dir", t.TempDir()}, args...)
	code, out, errs := runCmd(t, t.Context(), args...)
	var rep fleetsim.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("nkudo %s: exit %d (%v)\n%s\n%s", strings.Join(args, " "), code, err, out, errs)
	}
	return rep
}

// checkFleet asserts what a correct run shows: every phase's changed
// sites got a plan and converged, no hypervisor call and no plan was made
// twice, and every commit got exactly one final nkudo/apply, a success.
func checkFleet(t *testing.T, rep fleetsim.Report, sites, vms int) {
	t.Helper()
	if len(rep.Phases) != 3 {
		t.Fatalf("phases: %+v, want rollout, one-site and one-percent", rep.Phases)
	}
	want := map[string]int{"rollout": sites, "one-site": 1, "one-percent": max(1, sites/100)}
	for _, p := range rep.Phases {
		if p.Sites != want[p.Name] || p.PlansStored != p.Sites || p.Converge.N != p.Sites {
			t.Errorf("%s: %d sites changed, %d got plans, %d converged; want %d each", p.Name, p.Sites, p.PlansStored, p.Converge.N, want[p.Name])
		}
		if p.Apply != "success" || p.ApplyFinals != 1 {
			t.Errorf("%s: nkudo/apply %q with %d final statuses, want one success", p.Name, p.Apply, p.ApplyFinals)
		}
	}
	if len(rep.DuplicateCalls) > 0 || len(rep.DuplicatePlans) > 0 {
		t.Errorf("duplicates: hypervisor calls %q, plans %q", rep.DuplicateCalls, rep.DuplicatePlans)
	}
	// create + start per VM, one more VM at one site, a resize at 1 %.
	if wantCalls := sites*vms*2 + 2 + max(1, sites/100); rep.HypervisorCalls != wantCalls {
		t.Errorf("hypervisor calls: %d, want %d", rep.HypervisorCalls, wantCalls)
	}
}

// TestSimulatorConverges runs the 100-site scenario (10 VMs each, a
// one-site change, a 1 % change) as a correctness check, on SQLite and on
// Postgres: nothing here is timed.
func TestSimulatorConverges(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var args []string
			if backend == "postgres" {
				args = append(args, "--database-url", pgtest.URL(t))
			}
			rep := benchFleet(t, append(args, "--sites=100", "--vms=10", "--timeout=3m")...)
			checkFleet(t, rep, 100, 10)
		})
	}
}

// TestBenchFleetRefuses: the bounds and the loopback rule are enforced
// before anything starts.
func TestBenchFleetRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--sites=0"}, "sites: 0: want 1 to 20000"},
		{[]string{"--sites=20001"}, "sites: 20001"},
		{[]string{"--vms=101"}, "vms: 101"},
		{[]string{"--replicas=2"}, "several replicas need --database-url postgres"},
		{[]string{"--kill-replica-after=5"}, "--kill-replica-after needs --replicas 2"},
		{[]string{"--timeout=3h"}, "timeout: 3h0m0s"},
	} {
		code, _, errs := runCmd(t, t.Context(), append([]string{"bench", "fleet", "--quiet", "--work-dir", t.TempDir()}, tc.args...)...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want an error containing %q", tc.args, code, errs, tc.want)
		}
	}
	for _, u := range []string{"https://192.0.2.1:8443", "https://example.com", "http://127.0.0.1:1"} {
		if err := fleetsim.CheckLoopback(u); err == nil {
			t.Errorf("CheckLoopback(%q) accepted it", u)
		}
	}
	for _, u := range []string{"https://127.0.0.1:8443", "https://[::1]:1", "https://localhost:2"} {
		if err := fleetsim.CheckLoopback(u); err != nil {
			t.Errorf("CheckLoopback(%q): %v", u, err)
		}
	}
}

// TestReplicaKilledMidRollout: three `nkudo serve` processes of this tree
// on one Postgres, 300 sites spread over them, and one replica killed with
// SIGKILL once 60 sites have converged. The agents of the killed replica
// fail over to the others; every site converges, nothing is planned or
// applied twice, and each commit gets exactly one final nkudo/apply.
//
// "serving" kills a replica that only serves agents. "reconciling" kills
// replica 0, which the webhooks reach and which reconciles, while it is
// storing the rollout's plans. Polling stays off: the webhook's request is
// in the store, and another replica adopts it once the dead one's
// repository lease lapses (--lease-ttl, 15 s here rather than 2 minutes).
func TestReplicaKilledMidRollout(t *testing.T) {
	bin := buildNkudo(t)
	for _, tc := range []struct {
		name    string
		replica int
		args    []string
	}{
		{"serving", 1, []string{"--timeout=4m"}},
		{"reconciling", 0, []string{"--lease-ttl=15s", "--timeout=6m"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := pgtest.URL(t)
			rep := benchFleet(t, append([]string{"--database-url", db, "--replicas=3", "--nkudo-binary", bin,
				"--sites=300", "--vms=2", fmt.Sprintf("--kill-replica=%d", tc.replica), "--kill-replica-after=60", "--heartbeat-interval=5s"}, tc.args...)...)
			if !rep.ReplicaKilled || rep.KilledReplica != tc.replica || rep.KilledAtConverged >= 300 {
				t.Fatalf("replica %d killed: %v, with %d of 300 sites converged; want replica %d killed mid-rollout",
					rep.KilledReplica, rep.ReplicaKilled, rep.KilledAtConverged, tc.replica)
			}
			checkFleet(t, rep, 300, 2)
		})
	}
}

// buildNkudo builds this tree's nkudo (as the e2e suites do: CGO off, so
// the build cache is shared) for tests that run it as separate processes.
func buildNkudo(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nkudo")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build nkudo: %v\n%s", err, out)
	}
	return bin
}
