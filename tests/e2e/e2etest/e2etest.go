// Package e2etest is the shared harness of the end-to-end suites in
// tests/e2e: it builds the real binaries once per test binary, runs them as
// processes whose output is captured to files (and shown when a test
// fails), serves bare git repositories over smart HTTP through git's own
// http-backend, signs forge webhooks, and reads the fake hypervisor's
// request log.
//
// Nothing here simulates n-kudo itself: the suites drive the same programs
// an operator runs.
package e2etest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Binaries are the absolute paths of the built programs.
type Binaries struct {
	Dir string
	// Nkudo is the control plane, Edge the agent, Ctl the user CLI.
	Nkudo, Edge, Ctl string
	// CloudHypervisor and NetBird are the fakes of tests/fakes.
	CloudHypervisor, NetBird string
}

// packages maps each binary to its package, in the order they are built.
var packages = []struct{ name, pkg string }{
	{"nkudo", "./cmd/nkudo"},
	{"nkudo-edge", "./cmd/nkudo-edge"},
	{"nkudoctl", "./cmd/nkudoctl"},
	{"cloud-hypervisor", "./tests/fakes/cloud-hypervisor"},
	{"netbird", "./tests/fakes/netbird"},
}

var build struct {
	once sync.Once
	bins Binaries
	err  error
}

// Main runs the tests of a package that uses Build, then calls closers
// (for example giteatest.Close) and removes the built binaries. Call it
// from TestMain: os.Exit(e2etest.Main(m, closers...)).
func Main(m *testing.M, closers ...func() error) int {
	code := m.Run()
	for _, c := range closers {
		if err := c(); err != nil {
			fmt.Fprintln(os.Stderr, "e2etest: cleanup:", err)
		}
	}
	if build.bins.Dir != "" {
		os.RemoveAll(build.bins.Dir)
	}
	return code
}

// ModuleRoot is the directory holding the n-kudo go.mod, found by walking
// up from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/nkudo/nkudo\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/nkudo/nkudo above the working directory")
		}
		dir = parent
	}
}

// MissingPackages lists the binaries' package directories that do not
// exist in the tree yet (for a loud skip naming them).
func MissingPackages() []string {
	root, err := ModuleRoot()
	if err != nil {
		return []string{err.Error()}
	}
	var missing []string
	for _, p := range packages {
		if _, err := os.Stat(filepath.Join(root, p.pkg, "main.go")); err != nil {
			missing = append(missing, p.pkg)
		}
	}
	return missing
}

// Build compiles every binary once per test binary (the first call pays,
// later calls reuse the result) into a temporary directory that Main
// removes. The edge agent and the fakes are built with CGO_ENABLED=0, as
// released. A build failure fails the test with the compiler's output.
func Build(t testing.TB) Binaries {
	t.Helper()
	build.once.Do(func() { build.bins, build.err = buildAll() })
	if build.err != nil {
		t.Fatalf("build binaries: %v", build.err)
	}
	return build.bins
}

func buildAll() (Binaries, error) {
	root, err := ModuleRoot()
	if err != nil {
		return Binaries{}, err
	}
	sweepStale()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", binDirPrefix, os.Getpid()))
	if err != nil {
		return Binaries{}, fmt.Errorf("temp dir: %w", err)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, p := range packages {
		args = append(args, p.pkg)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return Binaries{}, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	bin := func(name string) string { return filepath.Join(dir, name) }
	return Binaries{
		Dir:             dir,
		Nkudo:           bin("nkudo"),
		Edge:            bin("nkudo-edge"),
		Ctl:             bin("nkudoctl"),
		CloudHypervisor: bin("cloud-hypervisor"),
		NetBird:         bin("netbird"),
	}, nil
}

// binDirPrefix names the build directories; the PID after it lets a later
// run remove what a killed test binary (a timeout) could not.
const binDirPrefix = "nkudo-e2e-bin-"

// sweepStale removes build directories of test binaries that are gone.
func sweepStale() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*-*"))
	for _, m := range matches {
		pidText, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(m), binDirPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(m)
		}
	}
}
