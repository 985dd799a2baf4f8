package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDiffActualFromStreamsIn checks that --actual - reads the command's
// injected input, not the process's standard input.
func TestDiffActualFromStreamsIn(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantCode int
		wantErr  string
	}{
		{"empty inventory plans creates", `{"sites":[]}`, exitChanges, ""},
		{"bad inventory names stdin", `{"sites":`, exitError, "inventory from standard input: decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := nkudoctlIn(t, strings.NewReader(tt.in), "diff", "../../manifests-example", "--actual", "-")
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errOut)
			}
			if tt.wantErr != "" && !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr %q, want it to contain %q", errOut, tt.wantErr)
			}
			if tt.wantCode == exitChanges && !strings.Contains(out, "create") {
				t.Errorf("stdout has no create action:\n%s", out)
			}
		})
	}
}

// BenchmarkDiff10kVMs runs nkudoctl diff on 1,000 files, each a Site and
// its 10 VMs, against an empty inventory: 10,000 creates loaded, planned
// and rendered (to io.Discard).
func BenchmarkDiff10kVMs(b *testing.B) {
	dir := b.TempDir()
	for s := range 1000 {
		site := fmt.Sprintf("site-%04d", s)
		var sb strings.Builder
		fmt.Fprintf(&sb, "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: %s\nspec: {}\n", site)
		for v := range 10 {
			fmt.Fprintf(&sb, `---
apiVersion: nkudo.io/v1alpha1
kind: VirtualMachine
metadata:
  name: vm-%02d
  site: %s
spec:
  state: Running
  cpus: 2
  memoryMiB: 1024
  image: {url: https://images.example.com/pos.raw, sha256: bf5be81788e670051ac69259352fc924dfd83f96acde6fdabc5105aaa1c9852c}
  kernel: {url: https://images.example.com/vmlinux, sha256: 61947921197e8f7829fc98a120348472deb3d530786e70c507abe81e0b4e2e05, cmdline: console=ttyS0}
  disks: [{name: data, sizeGiB: 10}]
  networks: [{bridge: br-lan}]
`, v, site)
		}
		if err := os.WriteFile(filepath.Join(dir, site+".yaml"), []byte(sb.String()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		var errb bytes.Buffer
		code := run(b.Context(), []string{"diff", dir, "--actual", "-", "--color", "never"}, &Streams{In: strings.NewReader(`{"sites":[]}`), Out: io.Discard, Err: &errb})
		if code != exitChanges {
			b.Fatalf("exit %d, want %d: %s", code, exitChanges, errb.String())
		}
	}
}
