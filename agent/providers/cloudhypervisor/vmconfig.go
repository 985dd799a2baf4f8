package cloudhypervisor

import (
	"fmt"

	"github.com/nkudo/nkudo/agent/providers/internal/tap"
	"github.com/nkudo/nkudo/model"
)

// The VmConfig types below mirror cloud-hypervisor-openapi.yaml. They are
// typed on purpose: v53 ignores unknown keys and only validates a config at
// vm.boot, so a misspelled field would otherwise fail late or silently.

// VmConfig is the body of vm.create.
type VmConfig struct {
	Cpus    *CpusConfig    `json:"cpus,omitempty"`
	Memory  *MemoryConfig  `json:"memory,omitempty"`
	Payload PayloadConfig  `json:"payload"`
	Disks   []DiskConfig   `json:"disks,omitempty"`
	Net     []NetConfig    `json:"net,omitempty"`
	Rng     *RngConfig     `json:"rng,omitempty"`
	Serial  *ConsoleConfig `json:"serial,omitempty"`
	Console *ConsoleConfig `json:"console,omitempty"`
}

// CpusConfig: both fields are required by CH when cpus is present.
type CpusConfig struct {
	BootVCPUs int `json:"boot_vcpus"`
	MaxVCPUs  int `json:"max_vcpus"`
}

// MemoryConfig sizes are in bytes.
type MemoryConfig struct {
	Size int64 `json:"size"`
	// HotplugSize is the headroom above Size for vm.resize; zero means none.
	HotplugSize   int64  `json:"hotplug_size,omitempty"`
	HotplugMethod string `json:"hotplug_method,omitempty"`
}

// PayloadConfig needs a kernel or a firmware.
type PayloadConfig struct {
	Firmware  string `json:"firmware,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	Cmdline   string `json:"cmdline,omitempty"`
	Initramfs string `json:"initramfs,omitempty"`
}

// DiskConfig is one virtio-blk disk.
type DiskConfig struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly,omitempty"`
	ID       string `json:"id,omitempty"`
}

// NetConfig is one virtio-net device backed by a TAP.
type NetConfig struct {
	Tap string `json:"tap,omitempty"`
	MAC string `json:"mac,omitempty"`
	ID  string `json:"id,omitempty"`
}

// RngConfig is the virtio-rng source.
type RngConfig struct {
	Src string `json:"src"`
}

// Console modes.
const (
	ModeOff  = "Off"
	ModeFile = "File"
)

// ConsoleConfig is used for both serial and console.
type ConsoleConfig struct {
	Mode string `json:"mode"`
	File string `json:"file,omitempty"`
}

const mib = int64(1) << 20

// artifacts are the host paths a VM's config points at.
type artifacts struct {
	Kernel, Initramfs, Firmware, RootDisk, Seed, Serial string
	DataDisks                                           []string // same order as spec.Disks
}

// buildConfig turns a VM spec (with the current cpus/memory) into a VmConfig.
func buildConfig(name string, spec model.VMSpec, cpus, memoryMiB int, a artifacts) VmConfig {
	// Boot with the current size; the rest up to the ceiling is hotplug
	// headroom for vm.resize (ACPI hotplug only grows a running VM).
	maxMem := int64(max(spec.EffectiveMaxMemoryMiB(), memoryMiB)) * mib
	size := int64(memoryMiB) * mib
	cfg := VmConfig{
		Cpus:    &CpusConfig{BootVCPUs: cpus, MaxVCPUs: max(spec.EffectiveMaxCPUs(), cpus)},
		Memory:  &MemoryConfig{Size: size},
		Serial:  &ConsoleConfig{Mode: ModeFile, File: a.Serial},
		Console: &ConsoleConfig{Mode: ModeOff},
		Rng:     &RngConfig{Src: "/dev/urandom"},
	}
	if maxMem > size {
		cfg.Memory.HotplugSize = maxMem - size
		cfg.Memory.HotplugMethod = "Acpi"
	}
	switch {
	case spec.Kernel != nil:
		cfg.Payload = PayloadConfig{Kernel: a.Kernel, Initramfs: a.Initramfs, Cmdline: spec.Kernel.Cmdline}
	case spec.Firmware != nil:
		cfg.Payload = PayloadConfig{Firmware: a.Firmware}
	}
	if a.RootDisk != "" {
		cfg.Disks = append(cfg.Disks, DiskConfig{Path: a.RootDisk, ID: "root"})
	}
	for i, d := range spec.Disks {
		cfg.Disks = append(cfg.Disks, DiskConfig{Path: a.DataDisks[i], ID: "disk-" + d.Name})
	}
	if a.Seed != "" {
		cfg.Disks = append(cfg.Disks, DiskConfig{Path: a.Seed, Readonly: true, ID: "cidata"})
	}
	for i, n := range spec.Networks {
		mac := n.MAC
		if mac == "" {
			mac = tap.MAC(name, i)
		}
		cfg.Net = append(cfg.Net, NetConfig{Tap: tap.Name(name, i), MAC: mac, ID: fmt.Sprintf("net%d", i)})
	}
	return cfg
}
