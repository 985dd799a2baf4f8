package e2etest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/tests/fakes/chfake"
)

func TestGitServerPushAndClone(t *testing.T) {
	g := NewGitServer(t)
	url := g.InitBare(t, "fleet.git")
	w := Clone(t, url)
	w.Write(t, map[string][]byte{"sites/a.yaml": []byte("a: 1\n")})
	before, after := w.CommitAndPush(t, "first")
	if before != "" {
		t.Errorf("before = %q on an empty repository, want empty", before)
	}
	remote := Git(t, "", "ls-remote", url, "refs/heads/main")
	if !strings.HasPrefix(remote, after) {
		t.Fatalf("ls-remote = %q, want the pushed commit %s", remote, after)
	}
	w.Edit(t, "sites/a.yaml", func(s string) string { return strings.Replace(s, "1", "2", 1) })
	before2, after2 := w.CommitAndPush(t, "second")
	if before2 != after || after2 == after {
		t.Errorf("second push: before %s after %s, want before %s and a new commit", before2, after2, after)
	}
	other := Clone(t, url)
	b, err := os.ReadFile(filepath.Join(other.Dir, "sites/a.yaml"))
	if err != nil || string(b) != "a: 2\n" {
		t.Errorf("fresh clone has %q, %v; want the second commit's content", b, err)
	}
}

func TestProcLogsAndStop(t *testing.T) {
	p := Start(t, ProcConfig{Name: "sleeper", Bin: "/bin/sh", Args: []string{"-c", "echo started; exec sleep 60"}})
	Eventually(t, t.Context(), 10*time.Second, "output captured", func(context.Context) error {
		if !strings.Contains(p.Log(), "started") {
			return errors.New("no output yet")
		}
		return nil
	})
	if done, _ := p.Exited(); done {
		t.Fatal("process exited early")
	}
	p.Kill()
	if done, err := p.Exited(); !done || err == nil {
		t.Errorf("after Kill: exited=%v err=%v, want exited by a signal", done, err)
	}
}

func TestAppliedCountsOnlySuccessfulMutations(t *testing.T) {
	sock := func(vm string) string { return "/state/vms/" + vm + "/api.sock" }
	entries := []chfake.LogEntry{
		{Socket: sock("a"), Endpoint: "vm.create", Status: 204},
		{Socket: sock("a"), Endpoint: "vm.info", Status: 200},
		{Socket: sock("a"), Endpoint: "vm.boot", Status: 503, Fault: "hang"},
		{Socket: sock("a"), Endpoint: "vm.boot", Status: 500, Fault: "status"},
		{Socket: sock("a"), Endpoint: "vm.boot", Status: 204},
		{Socket: sock("b"), Endpoint: "vm.create", Status: 204},
		{Socket: sock("b"), Endpoint: "vm.create", Status: 204},
		{Socket: sock("b"), Endpoint: "vm.resize", Status: 400},
	}
	want := map[string]map[string]int{
		"a": {"vm.create": 1, "vm.boot": 1},
		"b": {"vm.create": 2},
	}
	if d := cmp.Diff(want, Applied(entries)); d != "" {
		t.Errorf("Applied (-want +got):\n%s", d)
	}
}

func TestSweepStaleRemovesOnlyDeadBinariesDirs(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	// A PID that cannot be running (above the kernel's pid_max default) and our own.
	dead := filepath.Join(tmp, binDirPrefix+"999999999-x")
	alive := filepath.Join(tmp, fmt.Sprintf("%s%d-y", binDirPrefix, os.Getpid()))
	other := filepath.Join(tmp, binDirPrefix+"legacy")
	for _, d := range []string{dead, alive, other} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sweepStale()
	for d, want := range map[string]bool{dead: false, alive: true, other: true} {
		_, err := os.Stat(d)
		if got := err == nil; got != want {
			t.Errorf("%s exists = %v, want %v", filepath.Base(d), got, want)
		}
	}
}
