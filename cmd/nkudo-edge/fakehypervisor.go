package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/nkudo/nkudo/tests/fakes/chfake"
)

// The agent runs the fake Cloud Hypervisor (--hypervisor-fake) from its own
// executable: <state-dir>/bin/cloud-hypervisor links to it, and the
// provider starts that link with fakeHypervisorEnv set. Both are required,
// so an agent binary merely renamed cloud-hypervisor never turns into the
// fake.
const (
	fakeHypervisorName = "cloud-hypervisor"
	fakeHypervisorEnv  = "NKUDO_EDGE_FAKE_HYPERVISOR"
)

func isFakeHypervisor() bool {
	return filepath.Base(os.Args[0]) == fakeHypervisorName && os.Getenv(fakeHypervisorEnv) == "1"
}

// fakeHypervisor runs the fake VMM until it exits or is signalled.
func fakeHypervisor() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return chfake.Command(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

// linkFakeHypervisor makes dir/cloud-hypervisor a link to this executable
// (replacing a link to an older one) and returns its path.
func linkFakeHypervisor(dir string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("fake hypervisor: find own executable: %w", err)
	}
	// Absolute, so the VMMs' command lines name it whatever the cwd.
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("fake hypervisor: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("fake hypervisor: %w", err)
	}
	link := filepath.Join(dir, fakeHypervisorName)
	if cur, err := os.Readlink(link); err == nil && cur == self {
		return link, nil
	} else if err == nil || !errors.Is(err, fs.ErrNotExist) {
		if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("fake hypervisor: %w", err)
		}
	}
	if err := os.Symlink(self, link); err != nil {
		return "", fmt.Errorf("fake hypervisor: %w", err)
	}
	return link, nil
}
