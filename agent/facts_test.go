package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/api"
)

type fakeHV struct{ err error }

func (h fakeHV) Version(context.Context) (string, string, error) {
	if h.err != nil {
		return "", "", h.err
	}
	return "/usr/bin/cloud-hypervisor", "v53.0", nil
}

type fakeNB struct{}

func (fakeNB) Facts(context.Context) api.NetBirdFacts {
	return api.NetBirdFacts{Installed: true, State: "Connected", IP: "100.64.0.2", ManagementConnected: true}
}

func TestFactsFromProc(t *testing.T) {
	proc := t.TempDir()
	write := func(name, content string) {
		p := filepath.Join(proc, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("cpuinfo", "processor\t: 0\nmodel name\t: Test CPU @ 2GHz\n\nprocessor\t: 1\nmodel name\t: Test CPU @ 2GHz\n")
	write("meminfo", "MemTotal:        8048576 kB\nMemFree: 1 kB\n")
	write("stat", "cpu 1 2 3\nbtime 1700000000\n")
	write("sys/kernel/osrelease", "6.1.0-test\n")
	kvm := filepath.Join(t.TempDir(), "kvm")
	os.WriteFile(kvm, nil, 0o600)
	f := FactsSource{StateDir: t.TempDir(), ProcDir: proc, KVMPath: kvm, Hypervisor: fakeHV{}, NetBird: fakeNB{}, AgentVersion: "1.2.3"}.Collect(t.Context())
	if f.CPUs != 2 || f.CPUModel != "Test CPU @ 2GHz" || f.MemoryMiB != 7859 || f.KernelVersion != "6.1.0-test" ||
		f.BootTime.Unix() != 1700000000 || !f.KVM || f.KVMError != "" || f.DiskFreeGiB <= 0 || f.Hypervisor.Version != "v53.0" ||
		f.NetBird.IP != "100.64.0.2" || f.AgentVersion != "1.2.3" {
		t.Errorf("facts = %+v", f)
	}
	if len(f.Unknown) != 0 || len(f.Labels) != 0 {
		t.Errorf("unexpected unknown facts %v or labels %v", f.Unknown, f.Labels)
	}
}

func TestUnreadableFactsAreUnknownWithReason(t *testing.T) {
	f := FactsSource{StateDir: "/nonexistent/state", ProcDir: t.TempDir(), KVMPath: "/nonexistent/kvm",
		Hypervisor: fakeHV{err: errors.New("find cloud-hypervisor: not found")}}.Collect(t.Context())
	var got []string
	for fact, why := range f.Unknown {
		if why == "" {
			t.Errorf("unknown fact %s without a reason", fact)
		}
		got = append(got, fact)
	}
	slices.Sort(got)
	if d := cmp.Diff([]string{"bootTime", "cpuModel", "disk", "kernelVersion", "memoryMiB"}, got); d != "" {
		t.Errorf("unknown facts (-want +got):\n%s", d)
	}
	if f.KVM || !strings.Contains(f.KVMError, "/nonexistent/kvm") || f.Hypervisor.Error == "" || f.CPUs == 0 {
		t.Errorf("facts = %+v", f)
	}
	// The form sent to a control plane that predates the typed fields.
	l := f.LegacyLabels()
	if l.Labels["unknown.cpuModel"] != f.Unknown["cpuModel"] || l.Labels["kvmError"] != f.KVMError || l.Unknown != nil || l.KVMError != "" {
		t.Errorf("legacy form = %+v", l)
	}
}

type namedHV struct{ fakeHV }

func (namedHV) Name() string { return "qemu" }

// TestFactsNameTheProvider: a provider with a name (QEMU) is reported by
// it; one without is Cloud Hypervisor.
func TestFactsNameTheProvider(t *testing.T) {
	for _, tc := range []struct {
		hv   Hypervisor
		want string
	}{{fakeHV{}, "cloud-hypervisor"}, {namedHV{}, "qemu"}} {
		f := FactsSource{StateDir: t.TempDir(), Hypervisor: tc.hv}.Collect(t.Context())
		if f.Hypervisor.Name != tc.want || f.Hypervisor.Version == "" {
			t.Errorf("hypervisor facts %+v, want name %s with its version", f.Hypervisor, tc.want)
		}
	}
}
