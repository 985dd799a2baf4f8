package schema

import (
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

// BenchmarkValidate loads 10,000 VM documents: 40 sites of 250 VMs, 100 VMs
// per multi-document file.
func BenchmarkValidate(b *testing.B) {
	const (
		sites       = 40
		vmsPerSite  = 250
		vmsPerFile  = 100
		documentsVM = sites * vmsPerSite
	)
	fsys := fstest.MapFS{}
	var sb strings.Builder
	for s := range sites {
		site := fmt.Sprintf("site-%02d", s)
		fsys["sites/"+site+".yaml"] = &fstest.MapFile{Data: []byte(siteText(site))}
		for v := range vmsPerSite {
			fmt.Fprintf(&sb, "---\n%s", vmDocText(fmt.Sprintf("vm-%03d", v), site,
				"  state: Running",
				"  cpus: 2",
				"  maxCpus: 4",
				"  memoryMiB: 1024",
				"  image: {url: https://images.example.com/pos.raw, sha256: "+digestA+"}",
				"  kernel: {url: https://images.example.com/vmlinux, sha256: "+digestB+", cmdline: console=ttyS0}",
				"  disks: [{name: data, sizeGiB: 10}]",
				"  networks: [{bridge: br-lan}]",
				"  cloudInit: {userData: \"#cloud-config\\nhostname: x\\n\"}",
			))
			if (v+1)%vmsPerFile == 0 {
				fsys[fmt.Sprintf("vms/%s/%03d.yaml", site, v/vmsPerFile)] = &fstest.MapFile{Data: []byte(sb.String())}
				sb.Reset()
			}
		}
		if sb.Len() > 0 {
			fsys[fmt.Sprintf("vms/%s/rest.yaml", site)] = &fstest.MapFile{Data: []byte(sb.String())}
			sb.Reset()
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		d, err := Load(fsys)
		if err != nil {
			b.Fatal(err)
		}
		if len(d.VMs) != documentsVM {
			b.Fatalf("loaded %d VMs, want %d", len(d.VMs), documentsVM)
		}
	}
	b.ReportMetric(float64(documentsVM)*float64(b.N)/b.Elapsed().Seconds(), "docs/s")
}

// BenchmarkCacheOneFileChange loads a tree of 1,000 files, each a Site
// and its 10 VMs, through a Cache after one file changed: one file is
// parsed, the set checks run over all 11,000 documents.
func BenchmarkCacheOneFileChange(b *testing.B) {
	const sites, vms = 1000, 10
	fsys := fstest.MapFS{}
	version := map[string]int{} // the key: a git blob hash costs nothing to read either
	write := func(s, cpus int) {
		site := fmt.Sprintf("site-%04d", s)
		version["fleet/"+site+".yaml"]++
		var sb strings.Builder
		sb.WriteString(siteText(site))
		for v := range vms {
			fmt.Fprintf(&sb, "---\n%s", vmText(site, fmt.Sprintf("vm-%02d", v), "Running", cpus, ""))
		}
		fsys["fleet/"+site+".yaml"] = &fstest.MapFile{Data: []byte(sb.String())}
	}
	for s := range sites {
		write(s, 1)
	}
	c := NewCache(func(p string, _ fs.DirEntry) string { return fmt.Sprint(version[p]) })
	if _, _, err := c.Load(b.Context(), fsys); err != nil {
		b.Fatal(err)
	}
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		n++
		write(n%sites, 1+n/sites%2+1)
		d, st, err := c.Load(b.Context(), fsys)
		if err != nil {
			b.Fatal(err)
		}
		if st.Read != 1 || len(d.VMs) != sites*vms {
			b.Fatalf("read %d files, loaded %d VMs; want 1 and %d", st.Read, len(d.VMs), sites*vms)
		}
	}
}
