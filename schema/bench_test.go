package schema

import (
	"fmt"
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
