package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing/fstest"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/schema"
)

// manifestFile is one *.yaml/*.yml file of a tree, as schema.Load sees it.
type manifestFile struct {
	blob    plumbing.Hash
	size    int64
	regular bool
}

// manifestFiles lists the files schema.Load would read, with their blob
// hashes, from tree objects only: no blob is read. It walks with
// schema.WalkManifests, so the same rules skip hidden files and the same
// tree limits stop the walk at the first entry over one (the full load
// then reports it). Sizes are copied from prev for unchanged blobs and
// read from the object header otherwise; without prev they stay -1
// (unknown) until a full load fills them in.
func manifestFiles(ctx context.Context, fsys *treeFS, prev map[string]manifestFile) (map[string]manifestFile, error) {
	out := map[string]manifestFile{}
	err := schema.WalkManifests(ctx, fsys, func(name string, d fs.DirEntry) error {
		de, ok := d.(dirEntry)
		if !ok {
			return fmt.Errorf("walk tree: %s: not a tree entry", name)
		}
		f := manifestFile{blob: de.hash, size: -1, regular: d.Type().IsRegular()}
		if p, ok := prev[name]; ok && p.blob == de.hash {
			f.size = p.size
		} else if f.regular && prev != nil {
			// Only an incremental load needs sizes (a full load learns them
			// while reading, see treeFS.sizes).
			info, err := de.Info()
			if err != nil {
				return fmt.Errorf("size of %s: %w", name, err)
			}
			f.size = info.Size()
		}
		out[name] = f
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// referenceFile holds the Sites of unchanged files during an incremental
// load, so VMs in changed files find their Site. Its documents are dropped
// from the result.
const referenceFile = "zz-nkudo-incremental-reference-sites.yaml"

// incremental tries to validate tree t by loading only the files that
// changed since prev (a valid load), then re-checking the set rules on the
// merged result. It returns ok false whenever it cannot prove the merged
// state valid: the caller then runs the full schema.Load, which is the
// authority (and the source of every error message).
func incremental(ctx context.Context, prev *loaded, t *object.Tree, files map[string]manifestFile) (model.Desired, bool) {
	if prev == nil || prev.err != nil || prev.files == nil {
		return model.Desired{}, false
	}
	if _, clash := files[referenceFile]; clash {
		return model.Desired{}, false
	}
	var changed, removed []string
	var total int64
	for name, f := range files {
		if !f.regular || f.size < 0 || f.size > schema.MaxFileBytes {
			return model.Desired{}, false
		}
		total += f.size
		if p, ok := prev.files[name]; !ok || p.blob != f.blob {
			changed = append(changed, name)
		}
	}
	for name := range prev.files {
		if _, ok := files[name]; !ok {
			removed = append(removed, name)
		}
	}
	if len(changed)+len(removed) == 0 {
		return prev.desired, true // only files schema.Load does not read changed
	}
	// Beyond a tenth of the files, the full load costs about the same.
	if len(files) > schema.MaxFiles || total > schema.MaxTotalBytes || len(changed)+len(removed) > max(len(files)/10, 1) {
		return model.Desired{}, false
	}
	gone := map[string]bool{}
	for _, n := range changed {
		gone[n] = true
	}
	for _, n := range removed {
		gone[n] = true
	}
	sub := fstest.MapFS{}
	for _, n := range changed {
		if ctx.Err() != nil {
			return model.Desired{}, false
		}
		f, err := t.File(n)
		if err != nil {
			return model.Desired{}, false
		}
		body, err := f.Contents()
		if err != nil {
			return model.Desired{}, false
		}
		sub[n] = &fstest.MapFile{Data: []byte(body), Mode: 0o444}
	}
	var ref strings.Builder
	for _, s := range prev.desired.Sites {
		if gone[s.Source.File] {
			continue
		}
		doc, err := siteDocument(s)
		if err != nil {
			return model.Desired{}, false
		}
		ref.WriteString("---\n")
		ref.Write(doc)
		ref.WriteString("\n")
	}
	if ref.Len() > 0 {
		sub[referenceFile] = &fstest.MapFile{Data: []byte(ref.String()), Mode: 0o444}
	}
	var part model.Desired
	if len(sub) > 0 {
		var err error
		part, err = schema.LoadContext(ctx, sub)
		if err != nil && !(errors.Is(err, schema.ErrNoManifests) && len(changed) == 0) {
			return model.Desired{}, false
		}
	}
	var d model.Desired
	for _, s := range prev.desired.Sites {
		if !gone[s.Source.File] {
			d.Sites = append(d.Sites, s)
		}
	}
	for _, vm := range prev.desired.VMs {
		if !gone[vm.Source.File] {
			d.VMs = append(d.VMs, vm)
		}
	}
	for _, s := range part.Sites {
		if s.Source.File != referenceFile {
			d.Sites = append(d.Sites, s)
		}
	}
	d.VMs = append(d.VMs, part.VMs...)
	if len(d.Sites)+len(d.VMs) == 0 || !setValid(d) {
		return model.Desired{}, false
	}
	slices.SortFunc(d.Sites, func(a, b model.Site) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(d.VMs, func(a, b model.VirtualMachine) int {
		if c := strings.Compare(a.Site, b.Site); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return d, true
}

// siteDocument writes a Site back as a manifest document (JSON is YAML).
func siteDocument(s model.Site) ([]byte, error) {
	meta := map[string]any{"name": s.Name}
	if len(s.Labels) > 0 {
		meta["labels"] = s.Labels
	}
	if len(s.Annotations) > 0 {
		meta["annotations"] = s.Annotations
	}
	return json.Marshal(map[string]any{"apiVersion": model.APIVersion, "kind": model.KindSite, "metadata": meta, "spec": s.Spec})
}

// setValid re-checks the rules schema.Load applies across files: unique
// names, every VM's Site present, the per-site and per-tenant limits, MAC
// addresses unique per site, and the document limit (conservatively).
func setValid(d model.Desired) bool {
	if len(d.Sites) > schema.MaxSites || 2*(len(d.Sites)+len(d.VMs)) > schema.MaxDocuments {
		return false
	}
	sites := map[string]bool{}
	for _, s := range d.Sites {
		if sites[s.Name] {
			return false
		}
		sites[s.Name] = true
	}
	type key struct{ site, name string }
	vms := map[key]bool{}
	perSite := map[string]int{}
	macs := map[string]bool{}
	for _, vm := range d.VMs {
		k := key{vm.Site, vm.Name}
		if vms[k] || !sites[vm.Site] {
			return false
		}
		vms[k] = true
		perSite[vm.Site]++
		if perSite[vm.Site] > schema.MaxVMsPerSite {
			return false
		}
		for _, n := range vm.Spec.Networks {
			if n.MAC == "" {
				continue
			}
			mk := vm.Site + "/" + strings.ToLower(n.MAC)
			if macs[mk] {
				return false
			}
			macs[mk] = true
		}
	}
	return true
}
