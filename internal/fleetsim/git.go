package fleetsim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// repo is the simulated tenant repository: a git work tree on this machine,
// written with go-git, that the control plane fetches as a local source.
type repo struct {
	dir string
	r   *git.Repository
}

func initRepo(dir string) (*repo, error) {
	r, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{InitOptions: git.InitOptions{DefaultBranch: "refs/heads/main"}})
	if err != nil {
		return nil, fmt.Errorf("git init %s: %w", dir, err)
	}
	return &repo{dir: dir, r: r}, nil
}

// write replaces the manifest file of one site.
func (g *repo) write(site string, body string) error {
	p := filepath.Join(g.dir, "manifests", site+".yaml")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(body), 0o644)
}

// commit stages the named sites' files and commits them.
func (g *repo) commit(msg string, sites []string) (string, error) {
	wt, err := g.r.Worktree()
	if err != nil {
		return "", fmt.Errorf("git worktree: %w", err)
	}
	for _, s := range sites {
		if _, err := wt.Add(filepath.ToSlash(filepath.Join("manifests", s+".yaml"))); err != nil {
			return "", fmt.Errorf("git add %s: %w", s, err)
		}
	}
	sig := &object.Signature{Name: "fleetsim", Email: "fleetsim@nkudo.invalid", When: time.Now()}
	h, err := wt.Commit(msg, &git.CommitOptions{Author: sig, Committer: sig})
	if err != nil {
		return "", fmt.Errorf("git commit: %w", err)
	}
	return h.String(), nil
}

// vmSpec is what the simulator commits for one VM; resizable up to 4 CPUs,
// so the fleet-wide change is a resize, not a replacement.
type vmSpec struct {
	name string
	cpus int
}

const vmMemoryMiB = 256

// siteManifest is one site's file: its Site and its VMs, all Running.
func siteManifest(site string, vms []vmSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: %s\nspec: {}\n", site)
	for _, v := range vms {
		fmt.Fprintf(&b, `---
apiVersion: nkudo.io/v1alpha1
kind: VirtualMachine
metadata:
  name: %s
  site: %s
spec:
  state: Running
  cpus: %d
  maxCpus: 4
  memoryMiB: %d
  image:
    url: https://images.example.com/alpine.raw
    sha256: bf5be81788e670051ac69259352fc924dfd83f96acde6fdabc5105aaa1c9852c
  kernel:
    url: https://images.example.com/vmlinux
    sha256: 61947921197e8f7829fc98a120348472deb3d530786e70c507abe81e0b4e2e05
    cmdline: console=ttyS0 root=/dev/vda rw
  networks:
    - bridge: br-lan
`, v.name, site, v.cpus, vmMemoryMiB)
	}
	return b.String()
}
