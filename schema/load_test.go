package schema

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"github.com/nkudo/nkudo/model"
)

const (
	digestA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	digestB = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

const siteStore = `apiVersion: nkudo.io/v1alpha1
kind: Site
metadata:
  name: store-042
  labels: {region: eu-west}
spec:
  netbird: {groups: [stores]}
`

// vmDocText is a valid VM manifest; the spec lines start at line 6.
func vmDocText(name, site string, specLines ...string) string {
	spec := specLines
	if len(spec) == 0 {
		spec = []string{
			"  state: Running",
			"  cpus: 2",
			"  memoryMiB: 1024",
			"  image: {url: https://images.example.com/pos.raw, sha256: " + digestA + "}",
			"  kernel: {url: https://images.example.com/vmlinux, sha256: " + digestB + ", cmdline: console=ttyS0}",
		}
	}
	return "apiVersion: nkudo.io/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: " + name + "\n  site: " + site + "\nspec:\n" + strings.Join(spec, "\n") + "\n"
}

func mapFS(files map[string]string) fstest.MapFS {
	m := fstest.MapFS{}
	for name, data := range files {
		m[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return m
}

// loadErrors loads files and returns the error lines, failing when Load
// returned no schema.Errors.
func loadErrors(t *testing.T, files map[string]string) []string {
	t.Helper()
	_, err := Load(mapFS(files))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Load: want schema.Errors, got %v", err)
	}
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = e.Error()
	}
	return lines
}

func TestLoadValid(t *testing.T) {
	files := map[string]string{
		"sites/store-042.yaml": siteStore,
		"sites/tower-17.yml": `apiVersion: nkudo.io/v1alpha1
kind: Site
metadata:
  name: tower-17
  annotations:
    nkudo.io/allow-prune: "true"
`,
		"vms/store-042/pos.yaml": vmDocText("pos-2", "store-042") + "---\n" + vmDocText("pos-1", "store-042", []string{
			"  state: Stopped",
			"  cpus: 2",
			"  maxCpus: 4",
			"  memoryMiB: 1024",
			"  maxMemoryMiB: 4096",
			"  image: {url: https://images.example.com/pos.raw, sha256: " + digestA + "}",
			"  firmware: {url: https://images.example.com/hypervisor-fw, sha256: " + digestB + "}",
			"  disks: [{name: data, sizeGiB: 10}]",
			"  networks: [{bridge: br-lan, mac: '52:54:00:aa:bb:01'}]",
			"  cloudInit:",
			"    userData: |",
			"      #cloud-config",
			"      hostname: pos-1",
		}...) + "---\n",
		"README.md":          "not a manifest",
		".git/config.yaml":   "this: is [not, a manifest",
		"vms/.hidden.yaml":   "garbage: [",
		"vms/tower-17/a.YML": "\ufeff" + vmDocText("relay", "tower-17"), // a UTF-8 byte-order mark is fine
	}
	got, err := Load(mapFS(files))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	kernelSpec := func() model.VMSpec {
		return model.VMSpec{
			State: model.VMRunning, CPUs: 2, MemoryMiB: 1024,
			Image:  &model.Image{URL: "https://images.example.com/pos.raw", SHA256: digestA},
			Kernel: &model.Kernel{URL: "https://images.example.com/vmlinux", SHA256: digestB, Cmdline: "console=ttyS0"},
		}
	}
	want := model.Desired{
		Sites: []model.Site{
			{Name: "store-042", Labels: map[string]string{"region": "eu-west"},
				Spec:   model.SiteSpec{NetBird: &model.NetBirdSpec{Groups: []string{"stores"}}},
				Source: model.Source{File: "sites/store-042.yaml", Line: 1}},
			{Name: "tower-17", Annotations: map[string]string{model.AnnotationAllowPrune: "true"},
				Source: model.Source{File: "sites/tower-17.yml", Line: 1}},
		},
		VMs: []model.VirtualMachine{
			{Name: "pos-1", Site: "store-042", Source: model.Source{File: "vms/store-042/pos.yaml", Line: 13},
				Spec: model.VMSpec{
					State: model.VMStopped, CPUs: 2, MaxCPUs: 4, MemoryMiB: 1024, MaxMemoryMiB: 4096,
					Image:     &model.Image{URL: "https://images.example.com/pos.raw", SHA256: digestA},
					Firmware:  &model.Firmware{URL: "https://images.example.com/hypervisor-fw", SHA256: digestB},
					Disks:     []model.Disk{{Name: "data", SizeGiB: 10}},
					Networks:  []model.Network{{Bridge: "br-lan", MAC: "52:54:00:aa:bb:01"}},
					CloudInit: &model.CloudInit{UserData: "#cloud-config\nhostname: pos-1\n"},
				}},
			{Name: "pos-2", Site: "store-042", Source: model.Source{File: "vms/store-042/pos.yaml", Line: 1}, Spec: kernelSpec()},
			{Name: "relay", Site: "tower-17", Source: model.Source{File: "vms/tower-17/a.YML", Line: 1}, Spec: kernelSpec()},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load mismatch (-want +got):\n%s", diff)
	}
	if !got.Sites[1].AllowsPrune() || got.Sites[0].AllowsPrune() {
		t.Errorf("AllowsPrune: store-042=%v tower-17=%v, want false, true", got.Sites[0].AllowsPrune(), got.Sites[1].AllowsPrune())
	}
}

func TestLoadNoManifests(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"empty tree":       {},
		"only other files": {"README.md": "# hi", "main.go": "package main"},
		"empty documents":  {"a.yaml": "---\n---\n# just a comment\n", "b.yml": "", "c.yaml": "~\n"},
	} {
		t.Run(name, func(t *testing.T) {
			d, err := Load(mapFS(files))
			if !errors.Is(err, ErrNoManifests) {
				t.Fatalf("Load = %+v, %v; want ErrNoManifests", d, err)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{
			name: "schema errors name file, line and field",
			files: map[string]string{
				"sites.yaml": siteStore,
				"vms/store-042/pos-1.yaml": vmDocText("Pos_1", "store-042",
					"  state: Runing", // line 7
					"  cpus: 0",
					"  maxCpus: 2.5",
					"  memoryMiB: \"1024\"",
					"  image: {url: ftp://x/y, sha256: abc}",
					"  kernel:",
					"    url: https://example.com/k",
					"    sha256: "+digestA,
					"    initrd: https://example.com/i",
					"  disks:",
					"  - name: data",
					"    sizeGiB: 100000",
					"  networks: [{bridge: br-lan-very-long-name, mac: '01:00:5e:00:00:01'}]",
					"  bogus: true",
				),
			},
			want: []string{
				`vms/store-042/pos-1.yaml:4: metadata.name: "Pos_1" is not a DNS label: use lower-case letters, digits and '-', starting and ending with a letter or digit`,
				`vms/store-042/pos-1.yaml:7: spec.state: must be one of "Running", "Stopped", not "Runing"`,
				`vms/store-042/pos-1.yaml:8: spec.cpus: must be >= 1`,
				`vms/store-042/pos-1.yaml:9: spec.maxCpus: must be an integer, not a number`,
				`vms/store-042/pos-1.yaml:10: spec.memoryMiB: must be an integer, not a string`,
				`vms/store-042/pos-1.yaml:11: spec.image.sha256: must be a SHA-256 digest: 64 lower-case hex characters`,
				`vms/store-042/pos-1.yaml:11: spec.image.url: "ftp://x/y" is not an http:// or https:// URL`,
				`vms/store-042/pos-1.yaml:15: spec.kernel.initrd: unknown field`,
				`vms/store-042/pos-1.yaml:18: spec.disks[0].sizeGiB: must be <= 16384`,
				`vms/store-042/pos-1.yaml:19: spec.networks[0].bridge: "br-lan-very-long-name" is not a Linux interface name (letters, digits, '-', '_', '.'; at most 15 characters)`,
				`vms/store-042/pos-1.yaml:19: spec.networks[0].mac: "01:00:5e:00:00:01" is not a unicast MAC address like 52:54:00:12:34:56`,
				`vms/store-042/pos-1.yaml:20: spec.bogus: unknown field`,
			},
		},
		{
			name: "missing required fields",
			files: map[string]string{
				"sites.yaml": siteStore,
				"vm.yaml":    "apiVersion: nkudo.io/v1alpha1\nkind: VirtualMachine\nmetadata:\n  site: store-042\nspec:\n  cpus: 1\n",
			},
			want: []string{
				`vm.yaml:3: metadata: missing required field "name"`,
				`vm.yaml:5: spec: exactly one of kernel or firmware is required (the boot payload)`,
				`vm.yaml:5: spec: missing required field "image"`,
				`vm.yaml:5: spec: missing required field "memoryMiB"`,
				`vm.yaml:5: spec: missing required field "state"`,
			},
		},
		{
			name: "cross-field rules within a VM",
			files: map[string]string{
				"sites.yaml": siteStore,
				"a.yaml": vmDocText("a", "store-042",
					"  state: Running",
					"  cpus: 4",
					"  maxCpus: 2",
					"  memoryMiB: 2048",
					"  maxMemoryMiB: 1024",
					"  image: {url: https://e.com/i, sha256: "+digestA+"}",
					"  disks: [{name: data, sizeGiB: 1}, {name: data, sizeGiB: 2}, {name: root, sizeGiB: 1}]",
					"  networks: [{bridge: br0, mac: '52:54:00:00:00:01'}, {bridge: br1, mac: '52:54:00:00:00:01'}]",
				),
				"b.yaml": vmDocText("b", "store-042",
					"  state: Running",
					"  cpus: 1",
					"  memoryMiB: 512",
					"  image: {url: https://e.com/i, sha256: "+digestA+"}",
					"  kernel: {url: https://e.com/k, sha256: "+digestA+"}",
					"  firmware: {url: https://e.com/f, sha256: "+digestA+"}",
				),
			},
			want: []string{
				`a.yaml:6: spec: exactly one of kernel or firmware is required (the boot payload)`,
				`a.yaml:9: spec.maxCpus: must be >= spec.cpus (4)`,
				`a.yaml:11: spec.maxMemoryMiB: must be >= spec.memoryMiB (2048)`,
				`a.yaml:13: spec.disks[1].name: duplicate disk name "data" (also spec.disks[0])`,
				`a.yaml:13: spec.disks[2].name: disk name "root" is reserved for the agent (root, cidata)`,
				`a.yaml:14: spec.networks[1].mac: duplicate MAC address 52:54:00:00:00:01 (also spec.networks[0])`,
				`b.yaml:12: spec.firmware: kernel and firmware are mutually exclusive: keep one`,
			},
		},
		{
			name: "set checks",
			files: map[string]string{
				"sites/a.yaml": siteStore,
				"sites/b.yaml": siteStore + "---\n" + strings.Replace(siteStore, "store-042", "store-7", 1),
				"vms.yaml": vmDocText("pos-1", "store-042") + "---\n" + vmDocText("pos-1", "store-042") + "---\n" +
					vmDocText("pos-1", "store-7") + "---\n" + vmDocText("ghost", "store-999"),
			},
			want: []string{
				`sites/b.yaml:4: metadata.name: duplicate Site "store-042" (first defined at sites/a.yaml:4)`,
				`vms.yaml:16: metadata.name: duplicate VirtualMachine "pos-1" at site "store-042" (first defined at vms.yaml:4)`,
				`vms.yaml:41: metadata.site: site "store-999" is not defined by any Site manifest`,
			},
		},
		{
			name: "MAC addresses are unique per site",
			files: map[string]string{
				"sites.yaml": siteStore,
				"a.yaml": vmDocText("a", "store-042",
					"  state: Running", "  cpus: 1", "  memoryMiB: 512",
					"  image: {url: https://e.com/i, sha256: "+digestA+"}",
					"  kernel: {url: https://e.com/k, sha256: "+digestA+"}",
					"  networks: [{bridge: br0, mac: '52:54:00:00:00:01'}]"),
				"b.yaml": vmDocText("b", "store-042",
					"  state: Running", "  cpus: 1", "  memoryMiB: 512",
					"  image: {url: https://e.com/i, sha256: "+digestA+"}",
					"  kernel: {url: https://e.com/k, sha256: "+digestA+"}",
					"  networks: [{bridge: br0, mac: '52:54:00:00:00:01'}]"),
			},
			want: []string{
				`b.yaml:12: spec.networks[0].mac: MAC address 52:54:00:00:00:01 is already used at site "store-042" (a.yaml:12)`,
			},
		},
		{
			name: "apiVersion and kind",
			files: map[string]string{
				"a.yaml": "metadata: {name: x}\n",
				"b.yaml": "apiVersion: v1\nkind: ConfigMap\n",
				"c.yaml": "kind: Site\nmetadata: {name: x}\n",
				"d.yaml": "- a\n- b\n",
				"e.yaml": "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata: {name: site-e}\nspec: {netbird: {groups: [ ' x']}}\nstatus: {}\n",
			},
			want: []string{
				`a.yaml:1: missing apiVersion: want nkudo.io/v1alpha1`,
				`a.yaml:1: missing kind: want Site or VirtualMachine`,
				`b.yaml:1: apiVersion: unsupported apiVersion "v1": want nkudo.io/v1alpha1`,
				`b.yaml:2: kind: unknown kind "ConfigMap": want Site or VirtualMachine`,
				`c.yaml:1: missing apiVersion: want nkudo.io/v1alpha1`,
				`d.yaml:1: a manifest must be a YAML mapping with apiVersion, kind, metadata and spec`,
				`e.yaml:4: spec.netbird.groups[0]: " x" must not start or end with white space`,
				`e.yaml:5: status: unknown field`,
			},
		},
		{
			name: "labels and annotations",
			files: map[string]string{
				"a.yaml": "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: a\n  labels:\n    tier: 1\n    bad key: x\n    ok: \"-no-\"\n  annotations:\n    nkudo.io/allow-prune: yes\n",
			},
			want: []string{
				`a.yaml:6: metadata.labels.tier: must be a string, not a number`,
				`a.yaml:7: metadata.labels["bad key"]: invalid key: want an optional DNS-subdomain prefix and '/', then a name of at most 63 letters, digits, '-', '_' or '.'`,
				`a.yaml:8: metadata.labels.ok: "-no-" is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`,
				`a.yaml:10: metadata.annotations["nkudo.io/allow-prune"]: must be one of "true", "false", not "yes"`,
			},
		},
		{
			name: "YAML syntax error keeps other files checked",
			files: map[string]string{
				"a.yaml":   siteStore + "---\nkey: [unclosed\nother: 1\n",
				"vm.yaml":  vmDocText("pos-1", "store-9"),
				"vm2.yaml": vmDocText("BAD", "store-042"),
			},
			want: []string{
				`a.yaml:9: YAML syntax: did not find expected ',' or ']'`,
				`vm2.yaml:4: metadata.name: "BAD" is not a DNS label: use lower-case letters, digits and '-', starting and ending with a letter or digit`,
			},
		},
		{
			name: "duplicate keys",
			files: map[string]string{
				"sites.yaml": siteStore,
				"a.yaml":     vmDocText("a", "store-042") + "  cpus: 3\n",
			},
			want: []string{
				`a.yaml:12: spec.cpus: duplicate key "cpus" (first at line 8)`,
			},
		},
		{
			name: "merge keys and custom tags",
			files: map[string]string{
				"a.yaml": "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  <<: {name: a}\n  labels: {x: !secret y}\n",
			},
			want: []string{
				`a.yaml:4: metadata: merge keys (<<) are not supported; repeat the fields or alias a whole value`,
				`a.yaml:5: metadata.labels.x: unsupported YAML tag !secret`,
			},
		},
		{
			name: "non-UTF-8",
			files: map[string]string{
				"a.yaml": siteStore + "# caf\xe9\n",
			},
			want: []string{`a.yaml:8: file is not valid UTF-8 (manifests must be UTF-8 text)`},
		},
		{
			name: "non-finite numbers",
			files: map[string]string{
				"sites.yaml": siteStore,
				"a.yaml":     strings.Replace(vmDocText("a", "store-042"), "cpus: 2", "cpus: .inf", 1),
			},
			want: []string{`a.yaml:8: spec.cpus: .inf is not a finite number`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := loadErrors(t, tt.files)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadKernelInitramfs checks the optional initramfs beside a kernel:
// loaded into the model, and refused without its digest.
func TestLoadKernelInitramfs(t *testing.T) {
	vm := func(kernel string) string {
		return vmDocText("pos-1", "store-042", "  state: Running", "  cpus: 1", "  memoryMiB: 256",
			"  image: {url: https://images.example.com/pos.raw, sha256: "+digestA+"}", kernel)
	}
	d, err := Load(mapFS(map[string]string{"site.yaml": siteStore, "vm.yaml": vm(
		"  kernel: {url: https://images.example.com/vmlinux, sha256: " + digestB + ", initramfs: {url: https://images.example.com/initrd, sha256: " + digestA + "}}")}))
	if err != nil {
		t.Fatal(err)
	}
	if k := d.VMs[0].Spec.Kernel; k.Initramfs == nil || k.Initramfs.SHA256 != digestA {
		t.Fatalf("kernel = %+v, want the initramfs with its digest", k)
	}
	errs := loadErrors(t, map[string]string{"site.yaml": siteStore, "vm.yaml": vm(
		"  kernel: {url: https://images.example.com/vmlinux, sha256: " + digestB + ", initramfs: {url: https://images.example.com/initrd}}")})
	if len(errs) == 0 || !strings.Contains(strings.Join(errs, "\n"), "initramfs") {
		t.Errorf("an initramfs without sha256: errors %q, want one naming initramfs", errs)
	}
}
