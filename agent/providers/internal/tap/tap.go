// Package tap owns the host side of VM networking shared by the providers:
// persistent single-queue TAP devices enslaved to bridges, created and
// removed over netlink, and the interface names and MACs derived from VM
// names.
package tap

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink"
)

// Ensure creates (if needed) bridge and a persistent single-queue TAP
// named tap enslaved to it, both up. Cloud Hypervisor and QEMU open an
// existing TAP as is, so the TAP must not be multi-queue (see interfaces.md §1.6).
func Ensure(tap, bridge string) error {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return privErr(fmt.Errorf("look up bridge %s: %w", bridge, err))
		}
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}}); err != nil && !errors.Is(err, syscall.EEXIST) {
			return privErr(fmt.Errorf("create bridge %s: %w", bridge, err))
		}
		if br, err = netlink.LinkByName(bridge); err != nil {
			return privErr(fmt.Errorf("look up bridge %s: %w", bridge, err))
		}
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return privErr(fmt.Errorf("set bridge %s up: %w", bridge, err))
	}
	link, err := netlink.LinkByName(tap)
	if err != nil {
		t := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: tap},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		}
		if err := netlink.LinkAdd(t); err != nil && !errors.Is(err, syscall.EEXIST) {
			return privErr(fmt.Errorf("create tap %s: %w", tap, err))
		}
		if link, err = netlink.LinkByName(tap); err != nil {
			return privErr(fmt.Errorf("look up tap %s: %w", tap, err))
		}
	}
	if err := netlink.LinkSetMaster(link, br); err != nil {
		return privErr(fmt.Errorf("attach tap %s to bridge %s: %w", tap, bridge, err))
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return privErr(fmt.Errorf("set tap %s up: %w", tap, err))
	}
	return nil
}

// Remove deletes tap; a missing tap is not an error.
func Remove(tap string) error {
	link, err := netlink.LinkByName(tap)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return privErr(fmt.Errorf("look up tap %s: %w", tap, err))
	}
	if err := netlink.LinkDel(link); err != nil {
		return privErr(fmt.Errorf("delete tap %s: %w", tap, err))
	}
	return nil
}

func privErr(err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w (VM networking needs CAP_NET_ADMIN: run the agent as root or with that capability, or disable networking)", err)
	}
	return err
}

// Name derives a host interface name (at most 15 bytes) from the VM name.
func Name(vm string, i int) string {
	sum := sha256.Sum256([]byte(vm))
	return fmt.Sprintf("nk%x%d", sum[:4], i)
}

// MAC derives a locally administered unicast MAC from the VM name.
func MAC(vm string, i int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", vm, i))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", sum[0], sum[1], sum[2])
}
