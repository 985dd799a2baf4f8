package fleetsim

import (
	"fmt"
	"sort"
	"strings"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// repo is the simulated tenant repository: a bare git repository on this
// machine that the control plane fetches as a local source. Commits are
// built from objects directly (one blob per changed site, one tree, one
// commit), so a commit costs what it changes, not the size of the fleet:
// a work tree's status over ten thousand files would dominate the run.
type repo struct {
	dir   string
	r     *git.Repository
	files map[string]plumbing.Hash // manifests/<site>.yaml → blob
	head  plumbing.Hash
}

func initRepo(dir string) (*repo, error) {
	r, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{Bare: true, InitOptions: git.InitOptions{DefaultBranch: "refs/heads/main"}})
	if err != nil {
		return nil, fmt.Errorf("git init %s: %w", dir, err)
	}
	return &repo{dir: dir, r: r, files: map[string]plumbing.Hash{}}, nil
}

// write stores one site's manifest file for the next commit.
func (g *repo) write(site string, body string) error {
	h, err := g.put(plumbing.BlobObject, func(o plumbing.EncodedObject) error {
		w, err := o.Writer()
		if err != nil {
			return err
		}
		if _, err := w.Write([]byte(body)); err != nil {
			return err
		}
		return w.Close()
	})
	if err != nil {
		return fmt.Errorf("git blob of %s: %w", site, err)
	}
	g.files[site+".yaml"] = h
	return nil
}

func (g *repo) put(t plumbing.ObjectType, fill func(plumbing.EncodedObject) error) (plumbing.Hash, error) {
	o := g.r.Storer.NewEncodedObject()
	o.SetType(t)
	if err := fill(o); err != nil {
		return plumbing.ZeroHash, err
	}
	return g.r.Storer.SetEncodedObject(o)
}

// commit commits every file written so far on main and returns the
// commit's hash. The tree is manifests/<site>.yaml.
func (g *repo) commit(msg string) (string, error) {
	names := make([]string, 0, len(g.files))
	for n := range g.files {
		names = append(names, n)
	}
	sort.Strings(names)
	sub := &object.Tree{}
	for _, n := range names {
		sub.Entries = append(sub.Entries, object.TreeEntry{Name: n, Mode: filemode.Regular, Hash: g.files[n]})
	}
	subHash, err := g.put(plumbing.TreeObject, sub.Encode)
	if err != nil {
		return "", fmt.Errorf("git tree: %w", err)
	}
	root := &object.Tree{Entries: []object.TreeEntry{{Name: "manifests", Mode: filemode.Dir, Hash: subHash}}}
	rootHash, err := g.put(plumbing.TreeObject, root.Encode)
	if err != nil {
		return "", fmt.Errorf("git tree: %w", err)
	}
	sig := object.Signature{Name: "fleetsim", Email: "fleetsim@nkudo.invalid", When: time.Now()}
	c := &object.Commit{Author: sig, Committer: sig, Message: msg + "\n", TreeHash: rootHash}
	if !g.head.IsZero() {
		c.ParentHashes = []plumbing.Hash{g.head}
	}
	h, err := g.put(plumbing.CommitObject, c.Encode)
	if err != nil {
		return "", fmt.Errorf("git commit: %w", err)
	}
	if err := g.r.Storer.SetReference(plumbing.NewHashReference(plumbing.NewBranchReferenceName("main"), h)); err != nil {
		return "", fmt.Errorf("git update main: %w", err)
	}
	g.head = h
	return h.String(), nil
}

// before is the commit main pointed at before the next one (zeros at first).
func (g *repo) before() string {
	if g.head.IsZero() {
		return strings.Repeat("0", 40)
	}
	return g.head.String()
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
