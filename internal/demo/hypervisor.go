package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/nkudo/nkudo/agent/providers/cloudhypervisor"
	"github.com/nkudo/nkudo/tests/fakes/chfake"
)

// FakeHypervisorName is the program name under which a binary that embeds
// the demo runs the fake Cloud Hypervisor: the demo links
// <data-dir>/bin/cloud-hypervisor to its own executable and hands that path
// to the agents, so no second program has to be built or installed. The
// binary's main (or a test's TestMain) checks IsFakeHypervisor first.
const FakeHypervisorName = "cloud-hypervisor"

// IsFakeHypervisor reports whether argv0 asks for the fake hypervisor.
func IsFakeHypervisor(argv0 string) bool { return filepath.Base(argv0) == FakeHypervisorName }

// FakeHypervisor runs the fake Cloud Hypervisor VMM (package chfake) as
// a command and returns the exit code (see chfake.Command).
func FakeHypervisor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return chfake.Command(ctx, args, stdout, stderr)
}

// linkFakeHypervisor makes dir/cloud-hypervisor point at self.
func linkFakeHypervisor(dir, self string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("fake hypervisor: %w", err)
	}
	link := filepath.Join(dir, FakeHypervisorName)
	if err := os.Symlink(self, link); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("fake hypervisor: %w", err)
	}
	return link, nil
}

// RealHypervisor returns the path of a cloud-hypervisor on PATH when
// /dev/kvm can be opened for reading and writing, else "".
func RealHypervisor() string {
	p, err := exec.LookPath("cloud-hypervisor")
	if err != nil {
		return ""
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return ""
	}
	f.Close()
	return p
}

// shutdownVMMs asks every VMM whose API socket lies under dir to exit.
// VMMs run in their own session so they outlive agent restarts; the demo
// ends them itself so nothing keeps running after it.
func shutdownVMMs(ctx context.Context, dir string) (stopped int, errs []error) {
	var socks []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSocket != 0 {
			socks = append(socks, p)
		}
		return nil
	})
	for _, s := range socks {
		if err := vmmShutdown(ctx, s); err != nil {
			errs = append(errs, fmt.Errorf("stop VMM at %s: %w", s, err))
			continue
		}
		stopped++
	}
	// Wait (briefly) for the sockets to disappear: the VMMs remove them on exit.
	deadline := time.Now().Add(5 * time.Second)
	for _, s := range socks {
		for time.Now().Before(deadline) {
			if _, err := os.Stat(s); errors.Is(err, fs.ErrNotExist) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return stopped, errs
}

func vmmShutdown(ctx context.Context, sock string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return cloudhypervisor.NewClient(sock).Action(ctx, "vmm.shutdown")
}
