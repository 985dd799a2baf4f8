package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nkudo/nkudo/api"
)

// Hypervisor is what facts need from a provider: its binary and version.
// A provider that also has a Name() string method is reported by that
// name; otherwise it is Cloud Hypervisor.
type Hypervisor interface {
	Version(ctx context.Context) (path, version string, err error)
}

// NetBirdFacter reports NetBird state (agent/netbird.Client).
type NetBirdFacter interface {
	Facts(ctx context.Context) api.NetBirdFacts
}

// FactsSource collects host facts. Every fact that cannot be read is left
// at its zero value and explained in Unknown[<fact>], never a crash.
type FactsSource struct {
	// StateDir is where VM disks live: its filesystem's free space is reported.
	StateDir     string
	Hypervisor   Hypervisor    // nil: no hypervisor configured
	NetBird      NetBirdFacter // nil: NetBird not configured
	AgentVersion string
	// ProcDir and KVMPath replace /proc and /dev/kvm (tests).
	ProcDir string
	KVMPath string
}

// Collect reads every fact. The result uses api.HostFacts' typed fields;
// LegacyLabels turns it into the form an older control plane accepts.
func (s FactsSource) Collect(ctx context.Context) api.HostFacts {
	proc := s.ProcDir
	if proc == "" {
		proc = "/proc"
	}
	f := api.HostFacts{OS: runtime.GOOS, Arch: runtime.GOARCH, AgentVersion: s.AgentVersion}
	unknown := func(fact string, err error) {
		if f.Unknown == nil {
			f.Unknown = map[string]string{}
		}
		f.Unknown[fact] = err.Error()
	}
	if h, err := os.Hostname(); err == nil {
		f.Hostname = h
	} else {
		unknown("hostname", err)
	}
	if b, err := os.ReadFile(filepath.Join(proc, "sys/kernel/osrelease")); err == nil {
		f.KernelVersion = strings.TrimSpace(string(b))
	} else {
		unknown("kernelVersion", err)
	}
	if n, model, err := cpuInfo(filepath.Join(proc, "cpuinfo")); err == nil {
		f.CPUs = n
		if model != "" {
			f.CPUModel = model
		} else {
			unknown("cpuModel", fmt.Errorf("no model name in %s", filepath.Join(proc, "cpuinfo")))
		}
	} else {
		f.CPUs = runtime.NumCPU()
		unknown("cpuModel", err)
	}
	if mem, err := memTotalMiB(filepath.Join(proc, "meminfo")); err == nil {
		f.MemoryMiB = mem
	} else {
		unknown("memoryMiB", err)
	}
	if bt, err := bootTime(filepath.Join(proc, "stat")); err == nil {
		f.BootTime = bt
	} else {
		unknown("bootTime", err)
	}
	if s.StateDir != "" {
		var st syscall.Statfs_t
		if err := syscall.Statfs(s.StateDir, &st); err == nil {
			const gib = 1 << 30
			f.DiskTotalGiB = round2(float64(st.Blocks) * float64(st.Bsize) / gib)
			f.DiskFreeGiB = round2(float64(st.Bavail) * float64(st.Bsize) / gib)
		} else {
			unknown("disk", fmt.Errorf("statfs %s: %w", s.StateDir, err))
		}
	}
	kvm := s.KVMPath
	if kvm == "" {
		kvm = "/dev/kvm"
	}
	if fd, err := os.OpenFile(kvm, os.O_RDWR, 0); err == nil {
		fd.Close()
		f.KVM = true
	} else {
		f.KVMError = err.Error()
	}
	if s.Hypervisor != nil {
		f.Hypervisor.Name = "cloud-hypervisor"
		if n, ok := s.Hypervisor.(interface{ Name() string }); ok {
			f.Hypervisor.Name = n.Name()
		}
		path, version, err := s.Hypervisor.Version(ctx)
		f.Hypervisor.Path, f.Hypervisor.Version = path, version
		if err != nil {
			f.Hypervisor.Error = err.Error()
		}
	}
	if s.NetBird != nil {
		f.NetBird = s.NetBird.Facts(ctx)
	}
	return f
}

func round2(v float64) float64 { return float64(int64(v*100)) / 100 }

func cpuInfo(path string) (int, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, "", err
	}
	n, model := 0, ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			n++
		case "model name", "Model", "cpu model":
			if model == "" {
				model = v
			}
		}
	}
	if n == 0 {
		return 0, "", fmt.Errorf("no processors listed in %s", path)
	}
	return n, model, nil
}

func memTotalMiB(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: MemTotal: %w", path, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("%s: no MemTotal line", path)
}

func bootTime(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("%s: btime: %w", path, err)
			}
			return time.Unix(sec, 0).UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s: no btime line", path)
}
