package debugbundle_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/agent/debugbundle"
)

// TestBundleQEMUVMs: a host running the QEMU provider gets its VMs'
// metadata (cloud-init data redacted), consoles, QEMU logs and process
// state in the bundle.
func TestBundleQEMUVMs(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	vm := filepath.Join(state, "qemu", "vms", "pos-1")
	if err := os.MkdirAll(vm, 0o750); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"meta.json":  `{"name":"pos-1","phase":"created","spec":{"cpus":1,"cloudInit":{"userData":"#cloud-config\npassword: hunter2-qemu\n"}}}`,
		"serial.log": "NKUDO-READY hostname=pos-1\n",
		"qemu.log":   "qemu-system-x86_64: warning: host doesn't support requested feature\n",
		"qemu.pid":   strconv.Itoa(os.Getpid()) + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(vm, name), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "out.tar.gz")
	if _, err := debugbundle.WriteFile(t.Context(), out, debugbundle.Options{StateDir: state, PKIDir: filepath.Join(state, "pki"),
		NetBird: filepath.Join(dir, "no-netbird"), AgentVersion: "dev"}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := readBundle(t, data)
	const p = "nkudo-edge-debug/qemu-vms/pos-1/"
	for name, want := range map[string]string{"serial.log": "NKUDO-READY", "qemu.log": "requested feature", "qemu.json": `"pidAlive": true`, "meta.json": `"pos-1"`} {
		if b, ok := got[p+name]; !ok || !strings.Contains(string(b), want) {
			t.Errorf("%s%s: present %v, want it to contain %q:\n%s", p, name, ok, want, b)
		}
	}
	for name, b := range got {
		if strings.Contains(string(b), "hunter2-qemu") {
			t.Errorf("%s carries the cloud-init data", name)
		}
	}
}
