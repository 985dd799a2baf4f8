package qemu

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/nkudo/nkudo/agent"
)

// Resize sets vCPUs and memory within the VM's ceilings. A running VM
// grows live: vCPUs are hot-added (device_add of the machine's CPU type,
// onlined by the guest) and memory by one pc-dimm per resize. A running VM
// that shrinks in either is restarted with the new size: the ACPI power
// button, then a new QEMU booting smaller. Hot-unplug needs the guest's
// cooperation and has crashed QEMU 7.2 under TCG on a later re-plug, so a
// shrink costs a reboot instead. A stopped VM gets the new size at its
// next start, as its boot size.
func (p *Provider) Resize(ctx context.Context, name string, cpus, memoryMiB int) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	m, err := p.managed(name)
	if err != nil {
		return err
	}
	if cpus < 1 || cpus > m.Spec.EffectiveMaxCPUs() {
		return fmt.Errorf("vm %s: cpus %d outside 1..%d (maxCpus)", name, cpus, m.Spec.EffectiveMaxCPUs())
	}
	if memoryMiB < 64 || memoryMiB > m.Spec.EffectiveMaxMemoryMiB() {
		return fmt.Errorf("vm %s: memoryMiB %d outside 64..%d (maxMemoryMiB)", name, memoryMiB, m.Spec.EffectiveMaxMemoryMiB())
	}
	pid := p.pid(name)
	if pid == 0 {
		m.CPUs, m.MemoryMiB = cpus, memoryMiB
		agent.Progress(ctx, fmt.Sprintf("vm is stopped: it boots with %d vCPUs, %d MiB at its next start", cpus, memoryMiB))
		return p.writeMeta(m)
	}
	live, err := p.liveInfo(ctx, name)
	if err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	if cpus < live.CPUs || memoryMiB < live.MemoryMiB {
		m.CPUs, m.MemoryMiB = cpus, memoryMiB
		if err := p.writeMeta(m); err != nil {
			return err
		}
		agent.Progress(ctx, fmt.Sprintf("shrinking from %d vCPUs, %d MiB restarts the guest", live.CPUs, live.MemoryMiB))
		if err := p.powerOff(ctx, name, pid); err != nil {
			return err
		}
		return p.launch(ctx, m)
	}
	if err := p.growCPUs(ctx, name, cpus); err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	if err := p.growMemory(ctx, name, memoryMiB); err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	agent.Progress(ctx, fmt.Sprintf("resized live to %d vCPUs, %d MiB", cpus, memoryMiB))
	m.CPUs, m.MemoryMiB = cpus, memoryMiB
	return p.writeMeta(m)
}

func slotLess(a, b hotpluggableCPU) bool {
	for _, k := range []string{"node-id", "socket-id", "die-id", "cluster-id", "core-id", "thread-id"} {
		if a.Props[k] != b.Props[k] {
			return a.Props[k] < b.Props[k]
		}
	}
	return false
}

func cpuID(s hotpluggableCPU) string {
	return fmt.Sprintf("cpu-s%d-c%d-t%d", s.Props["socket-id"], s.Props["core-id"], s.Props["thread-id"])
}

// growCPUs hot-adds vCPUs until QEMU has cpus of them.
func (p *Provider) growCPUs(ctx context.Context, name string, cpus int) error {
	var slots []hotpluggableCPU
	if err := p.qmp(ctx, name, func(m *Monitor) error { return m.Run(ctx, "query-hotpluggable-cpus", nil, &slots) }); err != nil {
		return err
	}
	sort.Slice(slots, func(i, j int) bool { return slotLess(slots[i], slots[j]) })
	var free []hotpluggableCPU
	plugged := 0
	for _, s := range slots {
		if s.QOMPath != "" {
			plugged++
		} else {
			free = append(free, s)
		}
	}
	if cpus <= plugged {
		return nil
	}
	if cpus-plugged > len(free) {
		return fmt.Errorf("%d vCPUs requested, but qemu has only %d slots", cpus, len(slots))
	}
	err := p.qmp(ctx, name, func(m *Monitor) error {
		for _, s := range free[:cpus-plugged] {
			args := map[string]any{"driver": s.Type, "id": cpuID(s)}
			for k, v := range s.Props {
				args[k] = v
			}
			if err := m.Run(ctx, "device_add", args, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	agent.Progress(ctx, fmt.Sprintf("hot-added %d vCPU(s)", cpus-plugged))
	return p.waitFor(ctx, fmt.Sprintf("qemu to have %d vCPUs", cpus), func() (bool, error) {
		var got []cpuInfo
		err := p.qmp(ctx, name, func(m *Monitor) error { return m.Run(ctx, "query-cpus-fast", nil, &got) })
		return err == nil && len(got) == cpus, err
	})
}

// growMemory hot-plugs one DIMM of the difference.
func (p *Provider) growMemory(ctx context.Context, name string, memoryMiB int) error {
	var sum memorySummary
	var devs []memoryDevice
	err := p.qmp(ctx, name, func(m *Monitor) error {
		if err := m.Run(ctx, "query-memory-size-summary", nil, &sum); err != nil {
			return err
		}
		return m.Run(ctx, "query-memory-devices", nil, &devs)
	})
	if err != nil {
		return err
	}
	cur := int((sum.BaseMemory + sum.PluggedMemory) / mib)
	if memoryMiB <= cur {
		return nil
	}
	if len(devs) >= dimmSlots {
		return fmt.Errorf("all %d memory slots are used: stop and start the VM to boot with %d MiB", dimmSlots, memoryMiB)
	}
	used := map[string]bool{}
	for _, d := range devs {
		used[d.Data.ID] = true
	}
	id := ""
	for i := 0; id == "" || used[id]; i++ {
		id = fmt.Sprintf("dimm%d", i)
	}
	delta := memoryMiB - cur
	err = p.qmp(ctx, name, func(m *Monitor) error {
		if err := m.Run(ctx, "object-add", map[string]any{"qom-type": "memory-backend-ram", "id": "mem-" + id, "size": int64(delta) * mib}, nil); err != nil {
			return err
		}
		if err := m.Run(ctx, "device_add", map[string]any{"driver": "pc-dimm", "id": id, "memdev": "mem-" + id}, nil); err != nil {
			_ = m.Run(ctx, "object-del", map[string]any{"id": "mem-" + id}, nil)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	agent.Progress(ctx, fmt.Sprintf("hot-plugged %s (%d MiB)", id, delta))
	return nil
}

// waitFor polls cond until it holds, for at most StopTimeout.
func (p *Provider) waitFor(ctx context.Context, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(p.opts.StopTimeout)
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("wait for %s: %w", what, err)
			}
			return fmt.Errorf("wait for %s: not within %s", what, p.opts.StopTimeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
