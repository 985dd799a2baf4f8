package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/model"
)

// ErrInjected is the failure a Hypervisor returns for the share of calls
// its FailureRate names.
var ErrInjected = errors.New("fleetsim: injected hypervisor failure")

// Hypervisor is an in-memory agent.Provider for one simulated site. Every
// mutating call is counted under its VM, operation and arguments, so the
// same action applied twice shows as a duplicate. Its zero value is not
// usable; call NewHypervisor.
type Hypervisor struct {
	// Latency is added to every mutating call; FailureRate (0–1) is the
	// share of mutating calls that fail with ErrInjected without effect.
	latency     time.Duration
	failureRate float64

	mu     sync.Mutex
	vms    map[string]model.ObservedVM
	calls  map[string]int // "vm op args" → calls that took effect
	failed int
	first  time.Time // first mutating call since the last Mark
	last   time.Time // last mutating call that took effect
}

// NewHypervisor returns an empty hypervisor.
func NewHypervisor(latency time.Duration, failureRate float64) *Hypervisor {
	return &Hypervisor{latency: latency, failureRate: failureRate, vms: map[string]model.ObservedVM{}, calls: map[string]int{}}
}

var _ agent.Provider = (*Hypervisor)(nil)

// Name and Version make the hypervisor reportable in host facts.
func (h *Hypervisor) Name() string { return "fleetsim" }

// Version reports a fixed version.
func (h *Hypervisor) Version(context.Context) (string, string, error) {
	return "in-memory", "fleetsim", nil
}

// mutate runs fn under the lock after the latency, counts the call under
// key and fails a FailureRate share of calls without running fn.
func (h *Hypervisor) mutate(ctx context.Context, key string, fn func() error) error {
	if h.latency > 0 {
		t := time.NewTimer(h.latency)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if h.first.IsZero() {
		h.first = now
	}
	if h.failureRate > 0 && rand.Float64() < h.failureRate {
		h.failed++
		return ErrInjected
	}
	if err := fn(); err != nil {
		return err
	}
	h.calls[key]++
	h.last = now
	return nil
}

func (h *Hypervisor) managed(name string) (model.ObservedVM, error) {
	vm, ok := h.vms[name]
	if ok && !vm.Managed {
		return vm, fmt.Errorf("vm %s: %w", name, agent.ErrUnmanaged)
	}
	return vm, nil
}

// Create records the VM, stopped, with the spec's hash and size.
func (h *Hypervisor) Create(ctx context.Context, name string, spec model.VMSpec) error {
	hash := spec.Hash()
	return h.mutate(ctx, fmt.Sprintf("%s create %s %d %d", name, hash, spec.CPUs, spec.MemoryMiB), func() error {
		vm, err := h.managed(name)
		if err != nil {
			return err
		}
		if vm.Name != "" && vm.SpecHash == hash {
			return nil
		}
		h.vms[name] = model.ObservedVM{Name: name, State: model.VMStopped, Managed: true, SpecHash: hash,
			CPUs: spec.CPUs, MemoryMiB: spec.MemoryMiB, MaxCPUs: spec.EffectiveMaxCPUs(), MaxMemoryMiB: spec.EffectiveMaxMemoryMiB()}
		return nil
	})
}

// Start marks the VM running.
func (h *Hypervisor) Start(ctx context.Context, name string) error {
	return h.setState(ctx, name, "start", model.VMRunning)
}

// Stop marks the VM stopped.
func (h *Hypervisor) Stop(ctx context.Context, name string) error {
	return h.setState(ctx, name, "stop", model.VMStopped)
}

func (h *Hypervisor) setState(ctx context.Context, name, op string, state model.VMState) error {
	return h.mutate(ctx, name+" "+op, func() error {
		vm, err := h.managed(name)
		if err != nil {
			return err
		}
		if vm.Name == "" {
			if state == model.VMStopped {
				return nil
			}
			return fmt.Errorf("start %s: no such vm", name)
		}
		vm.State = state
		h.vms[name] = vm
		return nil
	})
}

// Delete removes the VM.
func (h *Hypervisor) Delete(ctx context.Context, name string) error {
	return h.mutate(ctx, name+" delete", func() error {
		if _, err := h.managed(name); err != nil {
			return err
		}
		delete(h.vms, name)
		return nil
	})
}

// Resize sets the VM's size.
func (h *Hypervisor) Resize(ctx context.Context, name string, cpus, memoryMiB int) error {
	return h.mutate(ctx, fmt.Sprintf("%s resize %d %d", name, cpus, memoryMiB), func() error {
		vm, err := h.managed(name)
		if err != nil {
			return err
		}
		if vm.Name == "" {
			return fmt.Errorf("resize %s: no such vm", name)
		}
		vm.CPUs, vm.MemoryMiB = cpus, memoryMiB
		h.vms[name] = vm
		return nil
	})
}

// List reports every VM, sorted by name.
func (h *Hypervisor) List(context.Context) ([]model.ObservedVM, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]model.ObservedVM, 0, len(h.vms))
	for _, vm := range h.vms {
		out = append(out, vm)
	}
	slices.SortFunc(out, func(a, b model.ObservedVM) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Mark starts a new phase: the next mutating call is its first.
func (h *Hypervisor) Mark() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.first = time.Time{}
}

// Times returns the first mutating call since the last Mark and the last
// one that took effect (zero when there was none).
func (h *Hypervisor) Times() (first, last time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.first, h.last
}

// Duplicates lists the calls that took effect more than once with the
// same VM, operation and arguments, each as "vm op args ×n".
func (h *Hypervisor) Duplicates() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for k, n := range h.calls {
		if n > 1 {
			out = append(out, fmt.Sprintf("%s ×%d", k, n))
		}
	}
	slices.Sort(out)
	return out
}

// Calls is the number of mutating calls that took effect, and Failed the
// number that failed by injection.
func (h *Hypervisor) Calls() (calls, failed int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.calls {
		calls += n
	}
	return calls, h.failed
}

// Matches reports whether the VMs are exactly want: same names, states,
// and sizes, all managed. Spec hashes are the control plane's to compute.
func (h *Hypervisor) Matches(want map[string]model.ObservedVM) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.vms) != len(want) {
		return false
	}
	for name, w := range want {
		g, ok := h.vms[name]
		if !ok || !g.Managed || g.State != w.State || g.CPUs != w.CPUs || g.MemoryMiB != w.MemoryMiB {
			return false
		}
	}
	return true
}
