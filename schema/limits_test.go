package schema

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func siteText(name string) string {
	return "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: " + name + "\n"
}

func TestLoadLimits(t *testing.T) {
	t.Run("MaxVMsPerSite", func(t *testing.T) {
		var b strings.Builder
		for i := range MaxVMsPerSite + 2 {
			fmt.Fprintf(&b, "---\n%s", vmDocText(fmt.Sprintf("vm-%03d", i), "store-042"))
		}
		got := loadErrors(t, map[string]string{"site.yaml": siteStore, "vms.yaml": b.String()})
		want := []string{fmt.Sprintf(`site.yaml:4: metadata.name: site "store-042" has more than %d VMs (limit MaxVMsPerSite); the first one over is at vms.yaml:%d`,
			MaxVMsPerSite, 12*MaxVMsPerSite+5)}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("errors = %q, want %q", got, want)
		}
	})
	t.Run("MaxSites", func(t *testing.T) {
		var b strings.Builder
		files := map[string]string{}
		for i := range MaxSites + 1 {
			fmt.Fprintf(&b, "---\n%s", siteText(fmt.Sprintf("site-%05d", i)))
			if (i+1)%MaxDocumentsPerFile == 0 || i == MaxSites {
				files[fmt.Sprintf("sites-%02d.yaml", i/MaxDocumentsPerFile)] = b.String()
				b.Reset()
			}
		}
		got := loadErrors(t, files)
		want := []string{fmt.Sprintf("sites-10.yaml:5: metadata.name: too many sites: limit MaxSites is %d", MaxSites)}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("errors = %q, want %q", got, want)
		}
	})
	t.Run("MaxFiles", func(t *testing.T) {
		files := map[string]string{}
		for i := range MaxFiles + 1 {
			files[fmt.Sprintf("f%05d.yaml", i)] = "# empty\n"
		}
		got := loadErrors(t, files)
		want := []string{fmt.Sprintf("f%05d.yaml: too many manifest files: limit MaxFiles is %d", MaxFiles, MaxFiles)}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("errors = %q, want %q", got, want)
		}
	})
	t.Run("MaxDocuments", func(t *testing.T) {
		files := map[string]string{}
		doc := strings.Repeat("---\n{}\n", MaxDocumentsPerFile)
		for i := range MaxDocuments/MaxDocumentsPerFile + 1 {
			files[fmt.Sprintf("f%03d.yaml", i)] = doc
		}
		got := loadErrors(t, files)
		want := fmt.Sprintf("f%03d.yaml:2: too many manifests: limit MaxDocuments is %d", MaxDocuments/MaxDocumentsPerFile, MaxDocuments)
		if last := got[len(got)-1]; last != want {
			t.Errorf("last error = %q, want %q", last, want)
		}
	})
	t.Run("MaxTotalBytes", func(t *testing.T) {
		files := map[string]string{}
		comment := "# " + strings.Repeat("x", 1021) + "\n" // 1 KiB
		big := strings.Repeat(comment, MaxFileBytes/len(comment))
		for i := range MaxTotalBytes/MaxFileBytes + 1 {
			files[fmt.Sprintf("f%03d.yaml", i)] = big
		}
		got := loadErrors(t, files)
		want := []string{fmt.Sprintf("f%03d.yaml: manifests add up to more than 64 MiB: limit MaxTotalBytes", MaxTotalBytes/MaxFileBytes)}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("errors = %q, want %q", got, want)
		}
	})
}

func TestLoadSymlinkNotFollowed(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret.yaml")
	if err := os.WriteFile(outside, []byte("password: hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "site.yaml"), []byte(siteStore), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link.yaml")); err != nil {
		t.Fatal(err)
	}
	got := errorLines(t, os.DirFS(dir))
	want := []string{"link.yaml: not a regular file (symlinks are not followed)"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("errors = %q, want %q", got, want)
	}
}
