package demo

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/agent/providers/qemu"
	"github.com/nkudo/nkudo/tests/vm/guest"
)

// TestDemoWithQEMUBootsRealGuests runs the story with real guests: the
// grown VM's console shows its second vCPU, and no QEMU is left running.
func TestDemoWithQEMUBootsRealGuests(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: -short: boots two guests under QEMU")
	}
	if m := guest.Missing(); len(m) > 0 {
		msg := "the QEMU demo needs the packages " + strings.Join(m, ", ")
		if os.Getenv("NKUDO_E2E_VM") == "require" {
			t.Fatal(msg)
		}
		t.Skip("SKIP: " + msg)
	}
	base, err := os.MkdirTemp("", "nkq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dataDir := filepath.Join(base, "demo")
	var out bytes.Buffer
	var serial []byte
	err = Run(t.Context(), Options{
		DataDir: dataDir, Serve: testServe, Provider: ProviderQEMU, Hypervisor: qemu.DefaultBinary(), Accel: qemu.AccelTCG,
		Out: &out, Once: true, Timeout: 5 * time.Minute,
		Events: func(e Event) {
			if e.Step != StepDone {
				return
			}
			// Before the demo stops the guests: the story converges once QEMU
			// runs, the guest boots (and onlines its new vCPU) after that.
			deadline := time.Now().Add(3 * time.Minute)
			for time.Now().Before(deadline) {
				serial, _ = os.ReadFile(filepath.Join(dataDir, "s", qemuSite, "qemu", "vms", "camera-gw", "serial.log"))
				if st, ok := guest.LastStatus(serial); ok && st.CPUs == 2 {
					return
				}
				time.Sleep(200 * time.Millisecond) // polling a file with a deadline
			}
		},
	})
	if err != nil {
		t.Fatalf("demo --hypervisor qemu --once: %v\n%s", err, out.String())
	}
	st, ok := guest.LastStatus(serial)
	if !ok || st.Hostname != "camera-gw" || st.CPUs != 2 {
		t.Errorf("camera-gw's console ends with %+v (found %v), want hostname camera-gw with 2 vCPUs:\n%s", st, ok, serial)
	}
	if !strings.Contains(out.String(), "QEMU") {
		t.Errorf("the story does not say it runs QEMU:\n%s", out.String())
	}
	if socks := sockets(dataDir); len(socks) > 0 {
		t.Errorf("QMP sockets left after the demo: %v", socks)
	}
}
