package guest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitramfsUnpacksWithCpio checks the newc writer against the cpio
// tool: every file is listed and /init is the embedded script.
func TestInitramfsUnpacksWithCpio(t *testing.T) {
	if m := Missing(); len(m) > 0 {
		t.Skipf("SKIP: missing %s", strings.Join(m, ", "))
	}
	_, kver, err := Kernel()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Build(&buf, kver); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("SKIP: no cpio tool to read the archive back")
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet")
	cmd.Dir, cmd.Stdin = dir, &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "init"))
	if err != nil || !bytes.Equal(got, initScript) {
		t.Fatalf("init read back (%v): %d bytes, want %d", err, len(got), len(initScript))
	}
	for _, m := range Modules {
		if _, err := os.Stat(filepath.Join(dir, "lib/modules", m+".ko")); err != nil {
			t.Errorf("module %s: %v", m, err)
		}
	}
}
