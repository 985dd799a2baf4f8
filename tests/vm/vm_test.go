// Package vm_test is the real-VM end-to-end suite: the real `nkudo serve`
// (SQLite), `nkudo-edge run --provider qemu` and a bare git repository
// served over HTTP; commits describe VMs whose guests (the Debian cloud
// kernel with a busybox initramfs, tests/vm/guest) boot under QEMU. What
// the guests print on their serial consoles proves what happened inside
// them. NKUDO_E2E_VM=require (set by .ci/run) turns missing packages into
// a failure; at most two guests run at a time.
package vm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/tests/e2e/e2etest"
	"github.com/nkudo/nkudo/tests/vm/guest"
)

func TestMain(m *testing.M) {
	os.Exit(e2etest.Main(m))
}

var readyRe = regexp.MustCompile(`NKUDO-READY hostname=(\S+) marker=(\S*) .*uptime=([0-9.]+)`)

// TestVMBootsWithCloudInit: a commit of two VMs boots two guests, each
// with the hostname and marker of its own user-data.
func TestVMBootsWithCloudInit(t *testing.T) {
	w := newWorld(t)
	start := time.Now()
	w.work.Write(t, map[string][]byte{
		"sites/edge.yaml": siteYAML(),
		"vms/edge/a.yaml": w.vmYAML(vmSpec{name: "vm-a", host: "alpha-host", marker: "marker-alpha"}),
		"vms/edge/b.yaml": w.vmYAML(vmSpec{name: "vm-b", host: "beta-host", marker: "marker-beta"}),
	})
	sha := w.push(t, "two guests")
	launched := map[string]time.Time{}
	for _, name := range []string{"vm-a", "vm-b"} {
		e2etest.Eventually(t, t.Context(), convergeTimeout, name+" has a qemu process", func(context.Context) error {
			if len(w.qemuPIDs(name)) == 0 {
				return errors.New("none yet")
			}
			return nil
		})
		launched[name] = time.Now()
	}
	want := map[string][2]string{"vm-a": {"alpha-host", "marker-alpha"}, "vm-b": {"beta-host", "marker-beta"}}
	for name, hm := range want {
		st := w.waitGuest(t, name, "a status line", func(guest.Status) bool { return true })
		if st.Hostname != hm[0] || st.Marker != hm[1] {
			t.Errorf("%s reports hostname %q marker %q, want %q %q", name, st.Hostname, st.Marker, hm[0], hm[1])
		}
		b, _ := os.ReadFile(filepath.Join(w.vmDir(name), "serial.log"))
		if m := readyRe.FindSubmatch(b); m != nil {
			t.Logf("%s: ready %s s after its kernel started (guest uptime), %.1f s after its qemu process was first seen (TCG)",
				name, m[3], time.Since(launched[name]).Seconds())
		}
	}
	w.waitApplied(t, sha)
	t.Logf("commit to both guests ready and nkudo/apply success: %.1f s", time.Since(start).Seconds())
	t.Logf("agent RSS with two running guests: %d KiB", rssKiB(w.agent.PID()))
	v, err := w.client.SiteVMs(t.Context(), site)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range v.VMs {
		if vm.Actual == nil || vm.Actual.State != model.VMRunning || !vm.InSync {
			t.Errorf("%s: in sync %v, actual %+v", vm.Name, vm.InSync, vm.Actual)
		}
	}
}

// TestVMResizeStopStartDelete: commits resize one guest (it sees the new
// vCPU), stop it, start it again, and delete the other (no QEMU process,
// overlay or seed left).
func TestVMResizeStopStartDelete(t *testing.T) {
	w := newWorld(t)
	a := vmSpec{name: "vm-a", host: "alpha-host", marker: "ma"}
	b := vmSpec{name: "vm-b", host: "beta-host", marker: "mb"}
	w.work.Write(t, map[string][]byte{"sites/edge.yaml": siteYAML(), "vms/edge/a.yaml": w.vmYAML(a), "vms/edge/b.yaml": w.vmYAML(b)})
	w.waitApplied(t, w.push(t, "two guests"))
	w.waitGuest(t, "vm-a", "1 cpu", func(s guest.Status) bool { return s.CPUs == 1 })

	a.cpus = 2
	w.work.Write(t, map[string][]byte{"vms/edge/a.yaml": w.vmYAML(a)})
	pids := w.qemuPIDs("vm-a")
	w.waitApplied(t, w.push(t, "vm-a: 2 cpus"))
	w.waitGuest(t, "vm-a", "2 cpus after the resize", func(s guest.Status) bool { return s.CPUs == 2 })
	if got := w.qemuPIDs("vm-a"); strings.Join(got, ",") != strings.Join(pids, ",") {
		t.Errorf("the grow restarted qemu: pids %v, then %v", pids, got)
	}

	a.state = model.VMStopped
	w.work.Write(t, map[string][]byte{"vms/edge/a.yaml": w.vmYAML(a)})
	w.waitApplied(t, w.push(t, "vm-a: stopped"))
	if got := w.qemuPIDs("vm-a"); len(got) != 0 {
		t.Errorf("vm-a stopped, yet qemu runs: %v", got)
	}
	serial, _ := os.ReadFile(filepath.Join(w.vmDir("vm-a"), "serial.log"))
	if !strings.Contains(string(serial), "NKUDO-POWER-BUTTON") {
		t.Errorf("vm-a was not stopped by its power button; console tail:\n%s", tail(serial, 600))
	}

	a.state = model.VMRunning
	w.work.Write(t, map[string][]byte{"vms/edge/a.yaml": w.vmYAML(a)})
	w.waitApplied(t, w.push(t, "vm-a: running again"))
	st := w.waitGuest(t, "vm-a", "a status line after the start", func(guest.Status) bool { return true })
	if st.CPUs != 2 || st.Hostname != "alpha-host" {
		t.Errorf("vm-a after the start: %+v, want 2 cpus and its hostname", st)
	}

	if err := os.Remove(filepath.Join(w.work.Dir, "vms/edge/b.yaml")); err != nil {
		t.Fatal(err)
	}
	w.waitApplied(t, w.push(t, "vm-b: deleted"))
	if got := w.qemuPIDs("vm-b"); len(got) != 0 {
		t.Errorf("vm-b deleted, yet qemu runs: %v", got)
	}
	if _, err := os.Stat(w.vmDir("vm-b")); !errors.Is(err, os.ErrNotExist) {
		entries, _ := os.ReadDir(w.vmDir("vm-b"))
		t.Errorf("vm-b deleted, yet its directory remains (%v): %v", err, entries)
	}
	if got := w.qemuPIDs("vm-a"); len(got) != 1 {
		t.Errorf("vm-a has %d qemu processes, want 1", len(got))
	}
}

// TestVMAgentKilledDuringCreate: the agent is killed with SIGKILL while it
// downloads a VM's image; the restarted agent finishes the plan with
// exactly one QEMU process for that VM.
func TestVMAgentKilledDuringCreate(t *testing.T) {
	w := newWorld(t)
	w.art.mu.Lock()
	w.art.gate = make(chan struct{})
	w.art.mu.Unlock()
	w.work.Write(t, map[string][]byte{"sites/edge.yaml": siteYAML(),
		"vms/edge/a.yaml": w.vmYAML(vmSpec{name: "vm-a", host: "alpha-host", marker: "ma", gatedImage: true})})
	sha := w.push(t, "one guest, slow image")
	select {
	case <-w.art.gated:
	case <-time.After(convergeTimeout):
		t.Fatalf("the agent never asked for the image\n%s", e2etest.Tail(w.agent.LogPath, 40))
	}
	w.waitActionRunning(t, sha, model.OpCreate, "vm-a")
	w.agent.Kill()
	w.art.mu.Lock()
	close(w.art.gate)
	w.art.gate = nil
	w.art.mu.Unlock()
	w.startAgent()
	w.waitApplied(t, sha)
	w.waitGuest(t, "vm-a", "a status line", func(s guest.Status) bool { return s.Hostname == "alpha-host" })
	if got := w.qemuPIDs("vm-a"); len(got) != 1 {
		t.Errorf("vm-a has %d qemu processes after the agent crash, want exactly 1: %v", len(got), got)
	}
}

// TestVMDriftPoweredOffInside: a guest that powers itself off is seen as
// drift and started again; the second boot (which the root disk tells
// not to power off) stays up.
func TestVMDriftPoweredOffInside(t *testing.T) {
	w := newWorld(t)
	w.work.Write(t, map[string][]byte{"sites/edge.yaml": siteYAML(),
		"vms/edge/a.yaml": w.vmYAML(vmSpec{name: "vm-a", host: "alpha-host", marker: "ma", powerOffOnce: true})})
	sha := w.push(t, "a guest that powers itself off once")
	w.waitApplied(t, sha)
	e2etest.Eventually(t, t.Context(), convergeTimeout, "the control plane re-plans a start of vm-a", func(ctx context.Context) error {
		starts, err := w.startActions(ctx, "vm-a")
		if err != nil {
			return err
		}
		if starts < 2 {
			return fmt.Errorf("%d succeeded start actions of vm-a", starts)
		}
		return nil
	})
	w.waitGuest(t, "vm-a", "the second boot's status line", func(s guest.Status) bool { return s.Hostname == "alpha-host" })
	serial, _ := os.ReadFile(filepath.Join(w.vmDir("vm-a"), "serial.log"))
	if strings.Contains(string(serial), "NKUDO-POWEROFF-FROM-INSIDE") {
		t.Errorf("the running boot is the one that powers off:\n%s", tail(serial, 600))
	}
	e2etest.Eventually(t, t.Context(), convergeTimeout, "vm-a reported running and in sync", func(ctx context.Context) error {
		v, err := w.client.SiteVMs(ctx, site)
		if err != nil {
			return err
		}
		for _, vm := range v.VMs {
			if vm.Name == "vm-a" && vm.Actual != nil && vm.Actual.State == model.VMRunning && vm.InSync {
				return nil
			}
		}
		return fmt.Errorf("site VMs: %+v", v.VMs)
	})
}

// startActions counts the succeeded start actions of vm in the site's plans.
func (w *world) startActions(ctx context.Context, vm string) (int, error) {
	plans, err := w.client.ListPlans(ctx, api.PlanFilter{Site: site})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range plans {
		full, err := w.client.GetPlan(ctx, p.Plan.ID)
		if err != nil {
			return 0, err
		}
		for _, a := range full.Actions {
			if a.Action.Operation == model.OpStart && a.Action.VM == vm && a.Status == model.ActionSucceeded {
				n++
			}
		}
	}
	return n, nil
}

// waitActionRunning waits until the control plane has seen the action start.
func (w *world) waitActionRunning(t *testing.T, sha string, op model.Operation, vm string) {
	t.Helper()
	e2etest.Eventually(t, t.Context(), convergeTimeout, fmt.Sprintf("%s %s running", op, vm), func(ctx context.Context) error {
		plans, err := w.client.ListPlans(ctx, api.PlanFilter{Site: site, Commit: sha})
		if err != nil {
			return err
		}
		for _, p := range plans {
			full, err := w.client.GetPlan(ctx, p.Plan.ID)
			if err != nil {
				return err
			}
			for _, a := range full.Actions {
				if a.Action.Operation == op && a.Action.VM == vm && a.Status == model.ActionRunning {
					return nil
				}
			}
		}
		return fmt.Errorf("%d plans, none with %s %s running", len(plans), op, vm)
	})
}
