package tap

import (
	"errors"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestTapOnBridge creates a bridge and a TAP in a throw-away network
// namespace, so the host's interfaces are never touched.
func TestTapOnBridge(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	origin, err := netns.Get()
	if err != nil {
		t.Skipf("SKIP: cannot read the current network namespace: %v", err)
	}
	defer origin.Close()
	ns, err := netns.New() // also switches this thread into it
	if err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skip("SKIP: creating a network namespace needs CAP_SYS_ADMIN; TAP setup untested here")
		}
		t.Fatalf("new netns: %v", err)
	}
	defer func() {
		netns.Set(origin)
		ns.Close()
	}()
	name := Name("pos-1", 0)
	if err := Ensure(name, "br-test"); err != nil {
		if strings.Contains(err.Error(), "/dev/net/tun") || errors.Is(err, syscall.ENOENT) {
			t.Skipf("SKIP: no /dev/net/tun: %v", err)
		}
		t.Fatal(err)
	}
	if err := Ensure(name, "br-test"); err != nil { // idempotent
		t.Fatalf("second Ensure: %v", err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	br, _ := netlink.LinkByName("br-test")
	if link.Attrs().MasterIndex != br.Attrs().Index {
		t.Errorf("tap master = %d, want bridge %d", link.Attrs().MasterIndex, br.Attrs().Index)
	}
	if tt, ok := link.(*netlink.Tuntap); ok && tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
		t.Error("tap is multi-queue; Cloud Hypervisor would refuse it")
	}
	if err := Remove(name); err != nil {
		t.Fatal(err)
	}
	if err := Remove(name); err != nil {
		t.Fatalf("removing a missing tap: %v", err)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Error("tap still exists")
	}
}
