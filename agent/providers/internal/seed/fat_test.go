package seed

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestFATImageReadableByDOSTools(t *testing.T) {
	big := bytes.Repeat([]byte("#cloud-config\nruncmd: [echo hi]\n"), 40000) // > 1 MiB: several cluster sizes
	cases := map[string][]File{
		"small": {{"user-data", []byte("#cloud-config\nhostname: pos-1\n")}, {"meta-data", []byte("instance-id: pos-1\n")}, {"network-config", nil}},
		"large": {{"user-data", big}, {"meta-data", []byte("instance-id: x\n")}, {"network-config", []byte("version: 2\n")}},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteFAT(&buf, "CIDATA", files); err != nil {
				t.Fatal(err)
			}
			img := filepath.Join(t.TempDir(), "cidata.img")
			if err := os.WriteFile(img, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := string(buf.Bytes()[43:54]); got != "CIDATA     " {
				t.Errorf("BPB label = %q", got)
			}
			if _, err := exec.LookPath("fsck.fat"); err != nil {
				t.Skip("SKIP external check: fsck.fat (dosfstools) not installed; on-disk label checked only")
			}
			if out, err := exec.Command("fsck.fat", "-n", "-v", img).CombinedOutput(); err != nil {
				t.Fatalf("fsck.fat: %v\n%s", err, out)
			}
			if out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "LABEL", img).Output(); err == nil && strings.TrimSpace(string(out)) != "CIDATA" {
				t.Errorf("blkid label = %q, want CIDATA", out)
			}
			if _, err := exec.LookPath("mtype"); err != nil {
				return
			}
			for _, f := range files {
				out, err := exec.Command("mtype", "-i", img, "::"+f.Name).Output()
				if err != nil {
					t.Fatalf("mtype %s: %v", f.Name, err)
				}
				if !bytes.Equal(out, f.Data) && !(len(out) == 0 && len(f.Data) == 0) {
					t.Errorf("%s: read back %d bytes, want %d", f.Name, len(out), len(f.Data))
				}
			}
		})
	}
}
