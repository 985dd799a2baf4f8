package pgtest

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// TestCloseRemovesCluster: Close stops the server and removes its
// directory, so a TestMain with closers of its own leaves nothing behind;
// a second Close is harmless.
func TestCloseRemovesCluster(t *testing.T) {
	URL(t)
	mu.Lock()
	c := current
	mu.Unlock()
	if c == nil || c.dir == "" {
		t.Skip("SKIP: the cluster is an external server (NKUDO_TEST_DATABASE_URL): Close has nothing to remove")
	}
	proc := c.cmd.Process
	if err := Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(c.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory %s still there after Close (%v)", c.dir, err)
	}
	if err := proc.Signal(syscall.Signal(0)); err == nil {
		t.Errorf("postgres (pid %d) still running after Close", proc.Pid)
	}
	if err := Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
