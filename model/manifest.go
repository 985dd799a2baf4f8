package model

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// APIVersion is the only manifest apiVersion this release understands.
const APIVersion = "nkudo.io/v1alpha1"

// Kind names a manifest document type.
type Kind string

const (
	KindSite           Kind = "Site"
	KindVirtualMachine Kind = "VirtualMachine"
)

// AnnotationAllowPrune is the opt-in annotation (on a Site, value "true")
// that lets a commit delete more than the prune-safety share of that site's
// managed VMs. See docs/architecture.md, "Prune safety".
const AnnotationAllowPrune = "nkudo.io/allow-prune"

// Source locates a manifest document or field in the tenant repository.
// A zero Source means the position is unknown (for example an object built
// in code).
type Source struct {
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
}

// Site is one edge location, run by one edge agent.
type Site struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Spec        SiteSpec          `json:"spec"`
	Source      Source            `json:"source,omitzero"`
}

// SiteSpec is the desired configuration of a site itself.
type SiteSpec struct {
	NetBird *NetBirdSpec `json:"netbird,omitempty"`
}

// NetBirdSpec names the NetBird groups a site's peer joins. Setup keys never
// live in git; the agent receives them at enrollment.
type NetBirdSpec struct {
	Groups []string `json:"groups,omitempty"`
}

// AllowsPrune reports whether the site carries the prune opt-in annotation.
func (s Site) AllowsPrune() bool { return s.Annotations[AnnotationAllowPrune] == "true" }

// VMState is the desired or observed power state of a VM.
type VMState string

const (
	VMRunning VMState = "Running"
	VMStopped VMState = "Stopped"
)

// VirtualMachine is one Cloud Hypervisor microVM at a site.
type VirtualMachine struct {
	Name        string            `json:"name"`
	Site        string            `json:"site"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Spec        VMSpec            `json:"spec"`
	Source      Source            `json:"source,omitzero"`
}

// VMSpec is the desired configuration of a VM, as written in its manifest.
type VMSpec struct {
	State VMState `json:"state"`
	CPUs  int     `json:"cpus"`
	// MaxCPUs is the hot-resize ceiling; zero means no headroom (= CPUs).
	MaxCPUs   int `json:"maxCpus,omitempty"`
	MemoryMiB int `json:"memoryMiB"`
	// MaxMemoryMiB is the hot-resize ceiling; zero means no headroom (= MemoryMiB).
	MaxMemoryMiB int        `json:"maxMemoryMiB,omitempty"`
	Image        *Image     `json:"image,omitempty"`
	Kernel       *Kernel    `json:"kernel,omitempty"`
	Firmware     *Firmware  `json:"firmware,omitempty"`
	Disks        []Disk     `json:"disks,omitempty"`
	Networks     []Network  `json:"networks,omitempty"`
	CloudInit    *CloudInit `json:"cloudInit,omitempty"`
}

// Image is the root disk image, fetched once and verified by its digest.
type Image struct {
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
}

// Kernel is a direct-boot kernel payload.
type Kernel struct {
	URL     string `json:"url"`
	SHA256  string `json:"sha256"`
	Cmdline string `json:"cmdline,omitempty"`
	// Initramfs is loaded beside the kernel; nil boots without one.
	Initramfs *Image `json:"initramfs,omitempty"`
}

// Firmware is a firmware payload (for example rust-hypervisor-firmware).
type Firmware struct {
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
}

// Disk is an extra, empty data disk created by the agent.
type Disk struct {
	Name    string `json:"name"`
	SizeGiB int    `json:"sizeGiB"`
}

// Network attaches the VM to a host bridge through a TAP device.
type Network struct {
	Bridge string `json:"bridge"`
	// MAC is optional; empty means the agent derives a stable one.
	MAC string `json:"mac,omitempty"`
}

// CloudInit is the NoCloud seed the agent builds for the VM.
type CloudInit struct {
	UserData      string `json:"userData,omitempty"`
	NetworkConfig string `json:"networkConfig,omitempty"`
	// UserDataEncrypted is user-data encrypted to the site's age recipient
	// (ASCII armour); only the agent can decrypt it, just before it writes
	// the seed. Mutually exclusive with UserData.
	UserDataEncrypted string `json:"userDataEncrypted,omitempty"`
	// Files are written in the guest by cloud-init (write_files), so a
	// secret file can ship encrypted without encrypting all of user-data.
	Files []CloudInitFile `json:"files,omitempty"`
}

// CloudInitFile is one file cloud-init writes in the guest: plain Content,
// or ContentEncrypted (age armour to the site's recipient) that only the
// agent decrypts, just before it writes the seed.
type CloudInitFile struct {
	Path             string `json:"path"`
	Permissions      string `json:"permissions,omitempty"`
	Content          string `json:"content,omitempty"`
	ContentEncrypted string `json:"contentEncrypted,omitempty"`
}

// EffectiveMaxCPUs is the hot-resize ceiling, CPUs when no headroom is given.
func (s VMSpec) EffectiveMaxCPUs() int { return max(s.MaxCPUs, s.CPUs) }

// EffectiveMaxMemoryMiB is the hot-resize ceiling, MemoryMiB when no headroom is given.
func (s VMSpec) EffectiveMaxMemoryMiB() int { return max(s.MaxMemoryMiB, s.MemoryMiB) }

// Hash identifies everything about a VM that can only change by replacing
// it: every field except the power state and the resizable cpus/memory
// (the resize ceilings are included, normalised to their effective value).
// Planner and agent both use it, so it must stay stable across releases.
func (s VMSpec) Hash() string {
	fixed := s
	fixed.State = ""
	fixed.MaxCPUs = s.EffectiveMaxCPUs()
	fixed.MaxMemoryMiB = s.EffectiveMaxMemoryMiB()
	fixed.CPUs = 0
	fixed.MemoryMiB = 0
	b, err := json.Marshal(fixed) // struct fields marshal in declaration order: canonical
	if err != nil {
		panic("model: marshal VMSpec: " + err.Error()) // cannot happen: only plain types
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Desired is the validated desired state of one tenant at one commit.
type Desired struct {
	Sites []Site           `json:"sites"`
	VMs   []VirtualMachine `json:"vms"`
}
