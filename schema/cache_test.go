package schema

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

// contentKey keys a MapFS file by a hash of its content, as a git blob
// hash does.
func contentKey(fsys fstest.MapFS) func(string, fs.DirEntry) string {
	return func(p string, _ fs.DirEntry) string {
		f, ok := fsys[p]
		if !ok {
			return ""
		}
		return fmt.Sprintf("%x", sha256.Sum256(f.Data))
	}
}

func vmText(site, name, state string, cpus int, mac string) string {
	spec := []string{
		"  state: " + state,
		fmt.Sprintf("  cpus: %d", cpus),
		"  memoryMiB: 1024",
		"  image: {url: https://images.example.com/pos.raw, sha256: " + digestA + "}",
		"  kernel: {url: https://images.example.com/vmlinux, sha256: " + digestB + ", cmdline: console=ttyS0}",
	}
	if mac != "" {
		spec = append(spec, "  networks: [{bridge: br-lan, mac: \""+mac+"\"}]")
	}
	return vmDocText(name, site, spec...)
}

// TestCacheMatchesLoad edits a tree at random, valid and invalid edits
// mixed, and checks after every edit that Cache.Load gives exactly what
// LoadContext gives, errors included, and that it reads only the files
// that changed.
func TestCacheMatchesLoad(t *testing.T) {
	fsys := fstest.MapFS{}
	set := func(p, data string) { fsys[p] = &fstest.MapFile{Data: []byte(data), Mode: 0o444} }
	removeDir := func(dir string) {
		for p := range fsys {
			if strings.HasPrefix(p, dir+"/") {
				delete(fsys, p)
			}
		}
	}
	const sites = 8
	vmsOf := map[int][]string{}
	siteName := func(s int) string { return fmt.Sprintf("site-%02d", s) }
	write := func(s int) {
		var b strings.Builder
		b.WriteString(siteText(siteName(s)))
		for _, vm := range vmsOf[s] {
			b.WriteString("---\n" + vm)
		}
		set("fleet/"+siteName(s)+".yaml", b.String())
	}
	for s := 1; s <= sites; s++ {
		for v := 1; v <= 3; v++ {
			vmsOf[s] = append(vmsOf[s], vmText(siteName(s), fmt.Sprintf("vm-%d", v), "Running", 1, ""))
		}
		write(s)
	}
	c := NewCache(contentKey(fsys))
	if _, st, err := c.Load(t.Context(), fsys); err != nil || st.Read != sites {
		t.Fatalf("first load: read %d files, err %v; want %d, nil", st.Read, err, sites)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	steps := 150
	for step := range steps {
		s := 1 + rng.IntN(sites)
		site := siteName(s)
		edit := rng.IntN(14)
		touched := 1 // files this edit writes: the most a load may read
		switch edit {
		case 0, 1, 2: // resize or stop one VM: the common change
			i := rng.IntN(len(vmsOf[s]))
			vmsOf[s][i] = vmText(site, fmt.Sprintf("vm-%d", i+1), []string{"Running", "Stopped"}[rng.IntN(2)], 1+rng.IntN(4), "")
			write(s)
		case 3: // add a VM
			vmsOf[s] = append(vmsOf[s], vmText(site, fmt.Sprintf("vm-%d", len(vmsOf[s])+1), "Running", 1, ""))
			write(s)
		case 4: // a VM in its own file, for a site defined elsewhere
			set(fmt.Sprintf("extra/%s-x%d.yaml", site, step), vmText(site, fmt.Sprintf("x-%d", step), "Running", 1, ""))
		case 5: // a duplicate VM name across files
			set(fmt.Sprintf("extra/dup-%d.yaml", step), vmText(site, "vm-1", "Running", 1, ""))
		case 6: // a VM whose site does not exist
			set(fmt.Sprintf("extra/orphan-%d.yaml", step), vmText("nowhere", "vm-1", "Running", 1, ""))
		case 7: // broken YAML: references into the file are unknown
			set(fmt.Sprintf("extra/broken-%d.yaml", step), "kind: [\n")
		case 8: // delete the extra files (repairs 5, 6, 7, 12 and 13)
			removeDir("extra")
			touched = 0
		case 9: // delete a site file: its VMs elsewhere lose their site
			delete(fsys, "fleet/"+site+".yaml")
			touched = 0
		case 10: // put it back
			write(s)
		case 11: // files the load does not read
			set("fleet/README.md", fmt.Sprint("step ", step))
			set("fleet/.hidden/x.yaml", "not: read\n")
			touched = 0
		case 12: // the same MAC address twice at one site, in two files
			set(fmt.Sprintf("extra/mac-%d.yaml", step), vmText(site, fmt.Sprintf("m-%d", step), "Running", 1, "52:54:00:00:00:01"))
		case 13: // a schema error
			set(fmt.Sprintf("extra/bad-%d.yaml", step), vmText(site, fmt.Sprintf("b-%d", step), "Paused", 1, ""))
		}
		full, fullErr := LoadContext(t.Context(), fsys)
		got, st, err := c.Load(t.Context(), fsys)
		if diff := cmp.Diff(errorText(fullErr), errorText(err)); diff != "" {
			t.Fatalf("step %d (edit %d): errors differ (-full +cached):\n%s", step, edit, diff)
		}
		if diff := cmp.Diff(full, got); diff != "" {
			t.Fatalf("step %d (edit %d): desired state differs (-full +cached):\n%s", step, edit, diff)
		}
		if st.Read > touched {
			t.Errorf("step %d (edit %d): read %d of %d files, want at most %d", step, edit, st.Read, st.Files, touched)
		}
	}
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	var errs Errors
	if errors.As(err, &errs) {
		return errs.Error()
	}
	return err.Error()
}

// TestCacheKeepsNoFailedRead: a load that fails (its context ended, a
// file could not be read) leaves the cache as it was, and the next load
// reads what changed.
func TestCacheKeepsNoFailedRead(t *testing.T) {
	fsys := mapFS(map[string]string{"site.yaml": siteStore, "vm.yaml": vmDocText("pos-1", "store-042")})
	c := NewCache(contentKey(fsys))
	if _, st, err := c.Load(t.Context(), fsys); err != nil || st.Read != 2 {
		t.Fatalf("first load: read %d, err %v", st.Read, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := c.Load(ctx, fsys); !errors.Is(err, context.Canceled) {
		t.Fatalf("load with an ended context: %v, want context.Canceled", err)
	}
	if _, st, err := c.Load(t.Context(), fsys); err != nil || st.Read != 0 {
		t.Fatalf("after an ended load: read %d, err %v; want 0, nil", st.Read, err)
	}
	failing := &failOpen{FS: fsys, fail: "vm.yaml"}
	fsys["vm.yaml"] = &fstest.MapFile{Data: []byte(vmDocText("pos-2", "store-042"))}
	if _, _, err := c.Load(t.Context(), failing); err == nil || !strings.Contains(err.Error(), "vm.yaml") {
		t.Fatalf("load with a failing file: %v, want an error naming vm.yaml", err)
	}
	d, st, err := c.Load(t.Context(), fsys)
	if err != nil || st.Read != 1 || len(d.VMs) != 1 || d.VMs[0].Name != "pos-2" {
		t.Fatalf("after a failed read: read %d, err %v, VMs %v; want the new VM read again", st.Read, err, d.VMs)
	}
}

// failOpen fails to open one file.
type failOpen struct {
	fs.FS
	fail string
}

func (f *failOpen) Open(name string) (fs.File, error) {
	if name == f.fail {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	return f.FS.Open(name)
}

// TestMergeLoadsSkippedFile: a worker can skip a file it took because a
// later file already failed or reached a limit; the merge, which reaches
// the skipped file first, loads it itself.
func TestMergeLoadsSkippedFile(t *testing.T) {
	fsys := mapFS(map[string]string{"a.yaml": siteStore, "b.yaml": vmDocText("pos-1", "store-042")})
	schemas, err := compiled()
	if err != nil {
		t.Fatal(err)
	}
	l := &loader{schemas: schemas}
	paths := []string{"a.yaml", "b.yaml"}
	results := []*fileResult{{skipped: true}, loadFile(fsys, "b.yaml", schemas)}
	read, err := l.merge(t.Context(), fsys, paths, results)
	if err != nil {
		t.Fatalf("merge: %v", err)
	}
	if read != 1 || len(l.docs) != 2 || len(l.errs) != 0 {
		t.Fatalf("merge read %d files, kept %d documents, errors %v; want 1, 2, none", read, len(l.docs), l.errs)
	}
	if d := l.check(); len(d.Sites) != 1 || len(d.VMs) != 1 {
		t.Errorf("desired state %+v, want the Site and its VM", d)
	}
}
