package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	if f.CPUs != 2 || f.Labels[LabelCPUModel] != "Test CPU @ 2GHz" || f.MemoryMiB != 7859 || f.KernelVersion != "6.1.0-test" ||
		f.BootTime.Unix() != 1700000000 || !f.KVM || f.DiskFreeGiB <= 0 || f.Hypervisor.Version != "v53.0" ||
		f.NetBird.IP != "100.64.0.2" || f.Labels[LabelAgentVersion] != "1.2.3" {
		t.Errorf("facts = %+v", f)
	}
	for k := range f.Labels {
		if strings.HasPrefix(k, unknownPrefix) {
			t.Errorf("unexpected unknown fact %s: %s", k, f.Labels[k])
		}
	}
}

func TestUnreadableFactsAreUnknownWithReason(t *testing.T) {
	f := FactsSource{StateDir: "/nonexistent/state", ProcDir: t.TempDir(), KVMPath: "/nonexistent/kvm",
		Hypervisor: fakeHV{err: errors.New("find cloud-hypervisor: not found")}}.Collect(t.Context())
	for _, k := range []string{"unknown.cpuModel", "unknown.memoryMiB", "unknown.kernelVersion", "unknown.bootTime", "unknown.disk", LabelKVMError} {
		if f.Labels[k] == "" {
			t.Errorf("label %s missing: %v", k, f.Labels)
		}
	}
	if f.KVM || f.Hypervisor.Error == "" || f.CPUs == 0 {
		t.Errorf("facts = %+v", f)
	}
}
