package reconciler

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/schema"
	"github.com/nkudo/nkudo/source"
)

// TestIncrementalLoadMatchesFullLoad edits a real repository at random,
// valid and invalid edits mixed, and checks after every commit that a
// schema.Cache keyed by blob hash (as the reconciler loads) gives exactly
// what the full schema.Load gives, errors included, and reads only the
// edited blob for the common small edits. schema's TestCacheMatchesLoad
// covers more edits on an in-memory tree.
func TestIncrementalLoadMatchesFullLoad(t *testing.T) {
	g := gittest.New(t)
	const sites = 8
	vmsOf := map[int][]string{}
	write := func(s int) {
		name := gittest.SiteName(s)
		var b strings.Builder
		b.WriteString(gittest.Site(name))
		for _, vm := range vmsOf[s] {
			b.WriteString("---\n" + vm)
		}
		g.Write("fleet/"+name+".yaml", b.String())
	}
	for s := 1; s <= sites; s++ {
		for v := 1; v <= 3; v++ {
			vmsOf[s] = append(vmsOf[s], gittest.VM(gittest.SiteName(s), fmt.Sprintf("vm-%d", v), "Running", 1))
		}
		write(s)
	}
	g.Commit("base")
	repo, err := git.PlainOpen(g.Remote)
	if err != nil {
		t.Fatal(err)
	}
	cache := schema.NewCache(source.BlobKey)
	rng := rand.New(rand.NewPCG(1, 2))
	incrementalOK, steps := 0, 60
	hashes, reusedOK, prevValid := &siteHashCache{}, 0, false
	for step := range steps {
		s := 1 + rng.IntN(sites)
		site := gittest.SiteName(s)
		edit := rng.IntN(12)
		switch edit {
		case 0, 1, 2: // resize or stop one VM: the common change
			i := rng.IntN(len(vmsOf[s]))
			vmsOf[s][i] = gittest.VM(site, fmt.Sprintf("vm-%d", i+1), []string{"Running", "Stopped"}[rng.IntN(2)], 1+rng.IntN(4))
			write(s)
		case 3: // add a VM
			vmsOf[s] = append(vmsOf[s], gittest.VM(site, fmt.Sprintf("vm-%d", len(vmsOf[s])+1), "Running", 1))
			write(s)
		case 4: // a VM in its own file, for a site defined elsewhere
			g.Write(fmt.Sprintf("extra/%s-x%d.yaml", site, step), gittest.VM(site, fmt.Sprintf("x-%d", step), "Running", 1))
		case 5: // a duplicate VM name across files
			g.Write(fmt.Sprintf("extra/dup-%d.yaml", step), gittest.VM(site, "vm-1", "Running", 1))
		case 6: // a VM whose site does not exist
			g.Write(fmt.Sprintf("extra/orphan-%d.yaml", step), gittest.VM("nowhere", "vm-1", "Running", 1))
		case 7: // broken YAML
			g.Write(fmt.Sprintf("extra/broken-%d.yaml", step), "kind: [\n")
		case 8: // delete the extra files (repairs 5, 6 and 7, drops 4's VMs)
			g.Remove("extra")
		case 9: // delete a site file: its VMs elsewhere lose their site
			g.Remove("fleet/" + site + ".yaml")
		case 10: // put it back
			write(s)
		case 11: // files schema.Load does not read
			g.Write("fleet/README.md", fmt.Sprint("step ", step))
			g.Write("fleet/.hidden/x.yaml", "not: read\n")
		}
		head := g.Commit(fmt.Sprint("step ", step))
		c, err := repo.CommitObject(plumbingHash(head))
		if err != nil {
			t.Fatal(err)
		}
		tree, err := c.Tree()
		if err != nil {
			t.Fatal(err)
		}
		tfs := source.NewTreeFS(repo.Storer, tree, c.Committer.When)
		full, fullErr := schema.Load(tfs)
		itfs := source.NewTreeFS(repo.Storer, tree, c.Committer.When)
		inc, st, incErr := cache.Load(t.Context(), itfs)
		if fmt.Sprint(fullErr) != fmt.Sprint(incErr) {
			t.Fatalf("step %d (edit %d): errors differ:\nfull:   %v\ncached: %v", step, edit, fullErr, incErr)
		}
		if diff := cmp.Diff(full, inc); diff != "" {
			t.Fatalf("step %d (edit %d): cached load differs (-full +cached):\n%s", step, edit, diff)
		}
		if st.Read < st.Files {
			incrementalOK++
		}
		if incErr == nil {
			// The site hashes reuse the previous load's for sites whose
			// files are unchanged, and equal a fresh hashing of the tree.
			fresh := &loaded{desired: full}
			cached := &loaded{desired: inc, blobs: itfs.BlobHashes(), hashCache: hashes}
			if diff := cmp.Diff(fresh.siteHashes(), cached.siteHashes()); diff != "" {
				t.Fatalf("step %d (edit %d): site hashes differ (-fresh +cached):\n%s", step, edit, diff)
			}
			if diff := cmp.Diff(fresh.docs, cached.docs); diff != "" {
				t.Fatalf("step %d (edit %d): site documents differ (-fresh +cached):\n%s", step, edit, diff)
			}
			if prevValid && (edit <= 4 || edit == 11) && cached.rehashed > 1 {
				t.Errorf("step %d (edit %d): hashed %d of %d sites again for a one-site edit", step, edit, cached.rehashed, len(fresh.hashes))
			}
			if cached.rehashed < len(fresh.hashes) {
				reusedOK++
			}
		}
		prevValid = incErr == nil
		// One file edited: only that blob is read.
		if simple := edit <= 3 || edit == 11; simple && st.Read > 1 {
			t.Errorf("step %d (edit %d): read %d of %d files for a one-file edit", step, edit, st.Read, st.Files)
		}
	}
	if incrementalOK == 0 {
		t.Errorf("the incremental path was never taken in %d steps", steps)
	}
	if reusedOK == 0 {
		t.Errorf("no site hash was reused in %d steps", steps)
	}
	t.Logf("incremental loads: %d of %d; site hashes reused: %d", incrementalOK, steps, reusedOK)
}

func plumbingHash(s string) plumbing.Hash { return plumbing.NewHash(s) }
