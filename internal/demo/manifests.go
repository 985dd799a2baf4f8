package demo

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/nkudo/nkudo/model"
)

// payloads serves the demo's stand-ins for images, kernels and firmware.
// The example manifests point at a placeholder mirror with illustrative
// digests; the demo rewrites them to this server and to the digests of
// what it serves, so the agent's download-and-verify path runs for real.
type payloads struct {
	mu    sync.Mutex
	files map[string][]byte // URL path → content
}

func (p *payloads) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	b, ok := p.files[r.URL.Path]
	p.mu.Unlock()
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(b)
}

// artifactRefs lists every (url, sha256) pair the VMs reference.
func artifactRefs(d model.Desired) map[string]string {
	refs := map[string]string{}
	for _, vm := range d.VMs {
		s := vm.Spec
		if s.Image != nil {
			refs[s.Image.URL] = s.Image.SHA256
		}
		if s.Kernel != nil {
			refs[s.Kernel.URL] = s.Kernel.SHA256
		}
		if s.Firmware != nil {
			refs[s.Firmware.URL] = s.Firmware.SHA256
		}
	}
	return refs
}

// rewriteArtifacts points every artifact of the manifests under dir at
// base+"/images/…" with the digest of the payload served there. It edits
// the YAML text (keeping comments and layout) and returns how many
// artifacts it redirected.
func (p *payloads) rewriteArtifacts(dir string, d model.Desired, base string) (int, error) {
	refs := artifactRefs(d)
	replace := make([]string, 0, 4*len(refs))
	urls := make([]string, 0, len(refs))
	for u := range refs {
		urls = append(urls, u)
	}
	sort.Strings(urls)
	p.mu.Lock()
	if p.files == nil {
		p.files = map[string][]byte{}
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			p.mu.Unlock()
			return 0, fmt.Errorf("artifact url %q: %w", raw, err)
		}
		servePath := path.Join("/images", u.Host, path.Clean("/"+u.Path))
		content := []byte(fmt.Sprintf("n-kudo demo payload standing in for %s (sha256 %s)\n", raw, refs[raw]))
		sum := sha256.Sum256(content)
		p.files[servePath] = content
		replace = append(replace, raw, base+servePath, refs[raw], hex.EncodeToString(sum[:]))
	}
	p.mu.Unlock()
	r := strings.NewReplacer(replace...)
	files, err := yamlFiles(dir)
	if err != nil {
		return 0, err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, fmt.Errorf("rewrite artifacts: %w", err)
		}
		out := r.Replace(string(b))
		if out != string(b) {
			if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
				return 0, fmt.Errorf("rewrite artifacts: %w", err)
			}
		}
	}
	return len(urls), nil
}

func yamlFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && p != dir {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list manifests in %s: %w", dir, err)
	}
	return out, nil
}

// change is the second commit of the story: one VM resized within its
// headroom and one new VM at the same site.
type change struct {
	Site      string
	Resized   string
	FromCPUs  int
	ToCPUs    int
	FromMiB   int
	ToMiB     int
	Added     string
	AddedFile string // relative to the repository
	Message   string
}

var (
	cpusLine   = regexp.MustCompile(`(?m)^(\s*)cpus:\s*\d+\s*$`)
	memoryLine = regexp.MustCompile(`(?m)^(\s*)memoryMiB:\s*\d+\s*$`)
)

// makeChange edits the work tree at dir: it grows the first running VM
// that has resize headroom (cpus and, when there is room, memory) and adds
// a small VM beside it that boots the same payload.
func makeChange(dir string, d model.Desired) (change, error) {
	vms := append([]model.VirtualMachine(nil), d.VMs...)
	sort.Slice(vms, func(i, j int) bool {
		if vms[i].Site != vms[j].Site {
			return vms[i].Site < vms[j].Site
		}
		return vms[i].Name < vms[j].Name
	})
	var target *model.VirtualMachine
	for i := range vms {
		s := vms[i].Spec
		if s.State == model.VMRunning && s.EffectiveMaxCPUs() > s.CPUs && vms[i].Source.File != "" {
			target = &vms[i]
			break
		}
	}
	if target == nil {
		return change{}, fmt.Errorf("the manifests have no running VM with resize headroom (maxCpus above cpus) to resize")
	}
	s := target.Spec
	c := change{Site: target.Site, Resized: target.Name, FromCPUs: s.CPUs, ToCPUs: min(s.CPUs*2, s.EffectiveMaxCPUs()),
		FromMiB: s.MemoryMiB, ToMiB: min(s.MemoryMiB*2, s.EffectiveMaxMemoryMiB())}

	// Edit the target's document only: from its first line to the next "---".
	file := filepath.Join(dir, filepath.FromSlash(target.Source.File))
	b, err := os.ReadFile(file)
	if err != nil {
		return change{}, fmt.Errorf("resize %s: %w", target.Name, err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	start := max(target.Source.Line-1, 0)
	end := len(lines)
	for i := start + 1; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "---") {
			end = i
			break
		}
	}
	doc := strings.Join(lines[start:end], "")
	edited := replaceFirst(cpusLine, doc, fmt.Sprintf("${1}cpus: %d", c.ToCPUs))
	if c.ToMiB != c.FromMiB {
		edited = replaceFirst(memoryLine, edited, fmt.Sprintf("${1}memoryMiB: %d", c.ToMiB))
	}
	if edited == doc {
		return change{}, fmt.Errorf("resize %s: found no cpus line in %s from line %d", target.Name, target.Source.File, target.Source.Line)
	}
	out := strings.Join(lines[:start], "") + edited + strings.Join(lines[end:], "")
	if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
		return change{}, fmt.Errorf("resize %s: %w", target.Name, err)
	}

	taken := map[string]bool{}
	for _, vm := range d.VMs {
		if vm.Site == target.Site {
			taken[vm.Name] = true
		}
	}
	c.Added = "kiosk"
	for i := 2; taken[c.Added]; i++ {
		c.Added = fmt.Sprintf("kiosk-%d", i)
	}
	c.AddedFile = path.Join(path.Dir(target.Source.File), c.Added+".yaml")
	if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(c.AddedFile)), []byte(newVMManifest(c.Added, target)), 0o644); err != nil {
		return change{}, fmt.Errorf("add %s: %w", c.Added, err)
	}
	c.Message = fmt.Sprintf("%s: grow %s to %d vCPUs / %d MiB and add %s", c.Site, c.Resized, c.ToCPUs, c.ToMiB, c.Added)
	return c, nil
}

func replaceFirst(re *regexp.Regexp, s, repl string) string {
	loc := re.FindStringSubmatchIndex(s)
	if loc == nil {
		return s
	}
	var dst []byte
	dst = re.ExpandString(dst, repl, s, loc)
	return s[:loc[0]] + string(dst) + s[loc[1]:]
}

// newVMManifest is a small VM booting the same payload as like.
func newVMManifest(name string, like *model.VirtualMachine) string {
	s := like.Spec
	var b strings.Builder
	fmt.Fprintf(&b, "# Added by the n-kudo demo's second commit: a self-service kiosk.\n")
	fmt.Fprintf(&b, "apiVersion: %s\nkind: VirtualMachine\nmetadata:\n  name: %s\n  site: %s\n  labels:\n    app: kiosk\nspec:\n", model.APIVersion, name, like.Site)
	fmt.Fprintf(&b, "  state: Running\n  cpus: 1\n  memoryMiB: 512\n")
	if s.Image != nil {
		fmt.Fprintf(&b, "  image:\n    url: %s\n    sha256: %s\n", s.Image.URL, s.Image.SHA256)
	}
	if s.Kernel != nil {
		fmt.Fprintf(&b, "  kernel:\n    url: %s\n    sha256: %s\n", s.Kernel.URL, s.Kernel.SHA256)
		if s.Kernel.Cmdline != "" {
			fmt.Fprintf(&b, "    cmdline: %q\n", s.Kernel.Cmdline)
		}
		if ird := s.Kernel.Initramfs; ird != nil {
			fmt.Fprintf(&b, "    initramfs:\n      url: %s\n      sha256: %s\n", ird.URL, ird.SHA256)
		}
	}
	if s.Firmware != nil {
		fmt.Fprintf(&b, "  firmware:\n    url: %s\n    sha256: %s\n", s.Firmware.URL, s.Firmware.SHA256)
	}
	if len(s.Networks) > 0 {
		fmt.Fprintf(&b, "  networks:\n    - bridge: %s\n", s.Networks[0].Bridge)
	}
	fmt.Fprintf(&b, "  cloudInit:\n    userData: |\n      #cloud-config\n      hostname: %s\n", name)
	return b.String()
}
