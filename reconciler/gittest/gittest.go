// Package gittest builds real git repositories for tests: a working tree
// that commits with the git binary and pushes to a bare "remote", plus
// generators of valid n-kudo manifests.
package gittest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Repo is a working tree with a bare remote it pushes to.
type Repo struct {
	t      testing.TB
	Work   string // the working tree
	Remote string // the bare repository sources fetch from (a local path)
	Branch string
}

// New creates an empty repository pair on branch main.
func New(t testing.TB) *Repo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("SKIP: the git binary is not installed; gittest needs it to build repositories")
	}
	root := t.TempDir()
	r := &Repo{t: t, Work: filepath.Join(root, "work"), Remote: filepath.Join(root, "remote.git"), Branch: "main"}
	r.Git(root, "init", "-q", "--bare", "-b", "main", r.Remote)
	r.Git(root, "init", "-q", "-b", "main", r.Work)
	r.Git(r.Work, "remote", "add", "origin", r.Remote)
	return r
}

// Git runs git in dir and returns its trimmed output.
func (r *Repo) Git(dir string, args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Write puts a file in the working tree (not yet committed).
func (r *Repo) Write(name, content string) {
	r.t.Helper()
	p := filepath.Join(r.Work, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// Remove deletes a file or directory from the working tree.
func (r *Repo) Remove(name string) {
	r.t.Helper()
	if err := os.RemoveAll(filepath.Join(r.Work, filepath.FromSlash(name))); err != nil {
		r.t.Fatal(err)
	}
}

// Commit commits everything and pushes the branch; it returns the commit hash.
func (r *Repo) Commit(msg string) string {
	r.t.Helper()
	r.Git(r.Work, "add", "-A")
	r.Git(r.Work, "commit", "-q", "--allow-empty", "-m", msg)
	r.Git(r.Work, "push", "-q", "-f", "origin", r.Branch)
	return r.Head()
}

// Head is the working tree's HEAD commit.
func (r *Repo) Head() string { return r.Git(r.Work, "rev-parse", "HEAD") }

// ResetHard moves the branch back to commit and force-pushes it (a rewind).
func (r *Repo) ResetHard(commit string) {
	r.t.Helper()
	r.Git(r.Work, "reset", "-q", "--hard", commit)
	r.Git(r.Work, "push", "-q", "-f", "origin", r.Branch)
}

// PushBranch commits the working tree on a new branch (a pull request head)
// and returns to the main branch; it returns the head commit.
func (r *Repo) PushBranch(branch, msg string) string {
	r.t.Helper()
	r.Git(r.Work, "checkout", "-q", "-b", branch)
	r.Git(r.Work, "add", "-A")
	r.Git(r.Work, "commit", "-q", "-m", msg)
	head := r.Head()
	r.Git(r.Work, "push", "-q", "-f", "origin", branch)
	r.Git(r.Work, "checkout", "-q", r.Branch)
	return head
}

// Site is a valid Site manifest.
func Site(name string) string {
	return fmt.Sprintf(`apiVersion: nkudo.io/v1alpha1
kind: Site
metadata:
  name: %s
spec: {}
`, name)
}

// SiteAllowPrune is a Site manifest carrying the prune opt-in annotation.
func SiteAllowPrune(name string) string {
	return fmt.Sprintf(`apiVersion: nkudo.io/v1alpha1
kind: Site
metadata:
  name: %s
  annotations:
    nkudo.io/allow-prune: "true"
spec: {}
`, name)
}

// VM is a valid VirtualMachine manifest with cpus CPUs.
func VM(site, name, state string, cpus int) string {
	return fmt.Sprintf(`apiVersion: nkudo.io/v1alpha1
kind: VirtualMachine
metadata:
  name: %s
  site: %s
spec:
  state: %s
  cpus: %d
  memoryMiB: 256
  image:
    url: https://images.example.com/alpine.raw
    sha256: bf5be81788e670051ac69259352fc924dfd83f96acde6fdabc5105aaa1c9852c
  kernel:
    url: https://images.example.com/vmlinux
    sha256: 61947921197e8f7829fc98a120348472deb3d530786e70c507abe81e0b4e2e05
    cmdline: console=ttyS0 root=/dev/vda rw
  networks:
    - bridge: br-lan
`, name, site, state, cpus)
}

// Fleet writes sites×vms manifests under dir (one file per site with its
// Site and VMs), named site-0001…, VMs vm-01….
func (r *Repo) Fleet(dir string, sites, vms int) {
	r.t.Helper()
	for s := 1; s <= sites; s++ {
		name := SiteName(s)
		var b strings.Builder
		b.WriteString(Site(name))
		for v := 1; v <= vms; v++ {
			b.WriteString("---\n")
			b.WriteString(VM(name, fmt.Sprintf("vm-%02d", v), "Running", 1))
		}
		r.Write(filepath.ToSlash(filepath.Join(dir, name+".yaml")), b.String())
	}
}

// SiteName is the name Fleet gives site number i (from 1).
func SiteName(i int) string { return fmt.Sprintf("site-%04d", i) }
