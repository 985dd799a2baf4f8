package schema

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nkudo/nkudo/model"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Load is LoadContext without a deadline: for callers that load a tree
// they trust (a local checkout), not one a tenant controls.
func Load(fsys fs.FS) (model.Desired, error) {
	return LoadContext(context.Background(), fsys)
}

// LoadContext reads every *.yaml and *.yml file under fsys (hidden files
// and directories, such as .git, are skipped), validates each document
// against the JSON Schema of its kind, then checks the set. On invalid
// input it returns Errors, every problem sorted by file and line. A tree
// without any manifest returns an error wrapping ErrNoManifests. Other
// failures (I/O) are returned wrapped. The walk stops at the first tree
// limit (MaxTreeEntries, MaxTreeDepth, MaxFiles) and then reads nothing.
//
// ctx bounds the time a load may take: it is checked at every entry walked
// and every file parsed, and when it ends the error wraps its cause.
//
// The result is ordered: sites by name, VMs by site then name.
func LoadContext(ctx context.Context, fsys fs.FS) (model.Desired, error) {
	d, _, _, err := load(ctx, fsys, nil, nil)
	return d, err
}

// load is LoadContext reusing the files of prev whose key (see walk) is
// unchanged. It also returns what the next load may reuse and the number
// of files it read.
func load(ctx context.Context, fsys fs.FS, key func(p string, d fs.DirEntry) string, prev cached) (model.Desired, cached, LoadStats, error) {
	schemas, err := compiled()
	if err != nil {
		return model.Desired{}, nil, LoadStats{}, err
	}
	l := &loader{schemas: schemas}
	next, stats, err := l.walk(ctx, fsys, key, prev)
	if err != nil {
		return model.Desired{}, nil, stats, err
	}
	if len(l.errs) == 0 && len(l.docs) == 0 {
		return model.Desired{}, next, stats, fmt.Errorf("load manifests: %w (no *.yaml or *.yml file holds a document)", ErrNoManifests)
	}
	d := l.check()
	if len(l.errs) > 0 {
		return model.Desired{}, next, stats, l.errs.sorted()
	}
	return d, next, stats, nil
}

// WalkManifests calls fn for every file Load would read (*.yaml and *.yml,
// hidden files and directories skipped, symlinks and other non-regular
// files included so the caller can refuse them), in lexical order. It
// counts while it walks and stops at the first limit: more than
// MaxTreeEntries entries, a path deeper than MaxTreeDepth, or more than
// MaxFiles manifest files return Errors naming the limit. When ctx ends it
// returns an error wrapping the context's cause. An error from fn stops
// the walk and is returned as is.
func WalkManifests(ctx context.Context, fsys fs.FS, fn func(p string, d fs.DirEntry) error) error {
	entries, files := 0, 0
	return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("load manifests: %w", context.Cause(ctx))
		}
		if err != nil {
			return fmt.Errorf("walk %s: %w", p, err)
		}
		if p == "." {
			return nil
		}
		entries++
		if entries > MaxTreeEntries {
			return Errors{{File: p, Message: fmt.Sprintf("too many files and directories: limit MaxTreeEntries is %d", MaxTreeEntries)}}
		}
		if depth := strings.Count(p, "/") + 1; depth > MaxTreeDepth {
			return Errors{{File: p, Message: fmt.Sprintf("directories nest too deep: limit MaxTreeDepth is %d", MaxTreeDepth)}}
		}
		name := d.Name()
		if strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() || !isManifestFile(name) {
			return nil
		}
		files++
		if files > MaxFiles {
			return Errors{{File: p, Message: fmt.Sprintf("too many manifest files: limit MaxFiles is %d", MaxFiles)}}
		}
		return fn(p, d)
	})
}

type loader struct {
	schemas    map[model.Kind]*jsonschema.Schema
	docs       []*manifest
	errs       Errors
	brokenFile bool // a file could not be parsed: references into it are unknown
}

// manifest is one document that passed the apiVersion/kind check. It is
// immutable once its file is loaded: a Cache shares it between loads.
type manifest struct {
	doc   *document
	kind  model.Kind
	name  string // "" when not a string
	site  string // VMs only
	valid bool   // passed the schema and document checks
	s     *model.Site
	vm    *model.VirtualMachine
}

// fileResult is what one manifest file contributes to a load. It depends
// only on the file's path and content, so files are loaded in parallel
// and a Cache can keep it for the next load of a tree holding the same
// file; the limits that add up across files are applied when the results
// are merged, in path order.
type fileResult struct {
	err      error  // I/O: the load fails with it
	skipped  bool   // not loaded: an earlier file already stops the load
	tooBig   bool   // over MaxFileBytes: never parsed
	size     int64  // bytes read
	errs     Errors // problems of the file as a whole (UTF-8, YAML syntax, limits)
	complete bool   // false when part of the file could not be read
	docs     []docResult
}

// docResult is one document of a file: its manifest (nil when apiVersion
// or kind is wrong) and its problems.
type docResult struct {
	line int
	m    *manifest
	errs Errors
}

func isManifestFile(name string) bool {
	ext := strings.ToLower(path.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

// cached is the previous results a load may reuse: by path, the content
// key and result of every file. nil means none.
type cached map[string]cachedFile

type cachedFile struct {
	key string
	r   *fileResult
}

// walk loads every manifest file of fsys. key, when not nil, names a
// file's content (a git blob hash, "" when unknown): a file whose key
// matches its entry in prev is not read again. walk returns the results
// worth keeping for the next load and how many files it read.
func (l *loader) walk(ctx context.Context, fsys fs.FS, key func(p string, d fs.DirEntry) string, prev cached) (next cached, stats LoadStats, err error) {
	var paths, keys []string
	err = WalkManifests(ctx, fsys, func(p string, d fs.DirEntry) error {
		if !d.Type().IsRegular() {
			// A symlink could point outside the repository: never follow it.
			l.errs = append(l.errs, Error{File: p, Message: "not a regular file (symlinks are not followed)"})
			l.brokenFile = true
			return nil
		}
		paths = append(paths, p)
		k := ""
		if key != nil {
			k = key(p, d)
		}
		keys = append(keys, k)
		return nil
	})
	var limit Errors
	if errors.As(err, &limit) {
		// The tree's shape is over a limit: read none of it.
		l.errs = append(l.errs, limit...)
		l.brokenFile = true
		return nil, stats, nil
	}
	if err != nil {
		return nil, stats, err
	}
	results := make([]*fileResult, len(paths))
	for i, p := range paths {
		if c, ok := prev[p]; ok && keys[i] != "" && c.key == keys[i] {
			results[i] = c.r
		}
	}
	// Refuse an oversized tree before reading any of it, by the sizes the
	// directory reports (or the cache knows); reading checks again, as
	// sizes can lie.
	var total int64
	for i, p := range paths {
		if r := results[i]; r != nil {
			if !r.tooBig {
				total += r.size
			}
		} else if st, err := fs.Stat(fsys, p); err == nil && st.Size() <= MaxFileBytes {
			// A file over MaxFileBytes is reported on its own and never read.
			total += st.Size()
		}
		if total > MaxTotalBytes {
			l.errs = append(l.errs, tooMuch(p))
			l.brokenFile = true
			return nil, stats, nil
		}
	}
	stats.Files = len(paths)
	stats.Read = l.loadFiles(ctx, fsys, paths, results)
	n, err := l.merge(ctx, fsys, paths, results)
	stats.Read += n
	if err != nil {
		return nil, stats, err
	}
	next = make(cached, len(paths))
	for i, p := range paths {
		if r := results[i]; keys[i] != "" && r.err == nil && !r.skipped {
			next[p] = cachedFile{key: keys[i], r: r}
		}
	}
	return next, stats, nil
}

// merge adds the files' results to the load in path order, applying the
// limits that add up across files. A file a worker skipped is loaded
// here if the merge reaches it: a worker may see a later file's failure
// or limit before it checks an earlier file it took. merge returns the
// number of files it read.
func (l *loader) merge(ctx context.Context, fsys fs.FS, paths []string, results []*fileResult) (read int, err error) {
	var total int64
	ndocs := 0
	for i, p := range paths {
		if ctx.Err() != nil {
			return read, fmt.Errorf("load manifests: %w", context.Cause(ctx))
		}
		r := results[i]
		if r.skipped {
			r = loadFile(fsys, p, l.schemas)
			results[i] = r
			read++
		}
		if r.err != nil {
			return read, r.err
		}
		if r.tooBig {
			l.errs = append(l.errs, tooBig(p))
			l.brokenFile = true
			continue
		}
		total += r.size
		if total > MaxTotalBytes {
			l.errs = append(l.errs, tooMuch(p))
			l.brokenFile = true
			break
		}
		l.errs = append(l.errs, r.errs...)
		if !r.complete {
			l.brokenFile = true
		}
		stop := false
		for _, d := range r.docs {
			ndocs++
			if ndocs > MaxDocuments {
				l.errs = append(l.errs, Error{File: p, Line: d.line, Message: fmt.Sprintf("too many manifests: limit MaxDocuments is %d", MaxDocuments)})
				stop = true
				break
			}
			l.errs = append(l.errs, d.errs...)
			if d.m != nil {
				l.docs = append(l.docs, d.m)
			}
		}
		if stop {
			l.brokenFile = true
			break
		}
	}
	return read, nil
}

// loadFiles fills in the missing results, on up to GOMAXPROCS goroutines.
// Files are taken in path order; once the files loaded so far add up to
// more than MaxTotalBytes or MaxDocuments (or one failed, or ctx ended),
// the merge will stop before the files still to take, so they are
// skipped unread (see merge for one taken before that). It returns the
// number of files read.
func (l *loader) loadFiles(ctx context.Context, fsys fs.FS, paths []string, results []*fileResult) int {
	var todo []int
	for i := range paths {
		if results[i] == nil {
			todo = append(todo, i)
		}
	}
	var (
		next, nbytes, ndocs, read atomic.Int64
		failed                    atomic.Bool
		wg                        sync.WaitGroup
	)
	work := func() {
		defer wg.Done()
		for {
			n := int(next.Add(1) - 1)
			if n >= len(todo) {
				return
			}
			i := todo[n]
			if ctx.Err() != nil || failed.Load() || nbytes.Load() > MaxTotalBytes || ndocs.Load() > MaxDocuments {
				results[i] = &fileResult{skipped: true}
				continue
			}
			r := loadFile(fsys, paths[i], l.schemas)
			read.Add(1)
			if r.err != nil {
				failed.Store(true)
			}
			nbytes.Add(r.size)
			ndocs.Add(int64(len(r.docs)))
			results[i] = r
		}
	}
	if len(todo) == 0 {
		return 0
	}
	workers := min(runtime.GOMAXPROCS(0), len(todo))
	wg.Add(workers)
	for range workers - 1 {
		go work()
	}
	work()
	wg.Wait()
	return int(read.Load())
}

// loadFile reads, parses and validates one manifest file.
func loadFile(fsys fs.FS, p string, schemas map[model.Kind]*jsonschema.Schema) *fileResult {
	f, err := fsys.Open(p)
	if err != nil {
		return &fileResult{err: fmt.Errorf("open %s: %w", p, err)}
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > MaxFileBytes {
		return &fileResult{tooBig: true}
	}
	// The size from Stat can lie (a growing file, a stream): read at most one
	// byte more than the limit.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return &fileResult{err: fmt.Errorf("read %s: %w", p, err)}
	}
	if len(data) > MaxFileBytes {
		return &fileResult{tooBig: true}
	}
	docs, errs, complete := parseFile(p, data)
	r := &fileResult{size: int64(len(data)), errs: errs, complete: complete, docs: make([]docResult, 0, len(docs))}
	for _, d := range docs {
		m, errs := checkDocument(d, schemas)
		r.docs = append(r.docs, docResult{line: d.line, m: m, errs: errs})
		d.compact()
	}
	return r
}

func tooMuch(p string) Error {
	return Error{File: p, Message: fmt.Sprintf("manifests add up to more than %d MiB: limit MaxTotalBytes", MaxTotalBytes>>20)}
}

func tooBig(p string) Error {
	return Error{File: p, Message: fmt.Sprintf("file is larger than %d MiB: limit MaxFileBytes (split it into several files)", MaxFileBytes>>20)}
}

// checkDocument checks apiVersion and kind, validates against the kind's schema,
// and runs the checks within the document.
func checkDocument(d *document, schemas map[model.Kind]*jsonschema.Schema) (*manifest, Errors) {
	var errs Errors
	obj := d.value.(map[string]any) // parseFile only returns mappings
	fail := func(field, msg string) {
		errs = append(errs, Error{File: d.file, Line: d.lineOf([]string{field}), Path: field, Message: msg})
	}
	av, hasAV := obj["apiVersion"]
	k, hasKind := obj["kind"]
	ok := true
	switch {
	case !hasAV:
		errs = append(errs, Error{File: d.file, Line: d.line, Message: "missing apiVersion: want " + model.APIVersion})
		ok = false
	case av != model.APIVersion:
		fail("apiVersion", fmt.Sprintf("unsupported apiVersion %s: want %s", quoteValue(av), model.APIVersion))
		ok = false
	}
	kd := model.Kind(fmt.Sprint(k))
	switch {
	case !hasKind:
		errs = append(errs, Error{File: d.file, Line: d.line, Message: "missing kind: want Site or VirtualMachine"})
		ok = false
	case schemas[kd] == nil:
		fail("kind", fmt.Sprintf("unknown kind %s: want Site or VirtualMachine", quoteValue(k)))
		ok = false
	}
	if !ok {
		return nil, errs
	}
	m := &manifest{doc: d, kind: kd}
	if md, ok := obj["metadata"].(map[string]any); ok {
		m.name, _ = md["name"].(string)
		m.site, _ = md["site"].(string)
	}
	if serrs := schemaErrors(schemas[kd], d); len(serrs) > 0 {
		errs = append(errs, serrs...)
		// Still run the cross-field checks when the types fit, so that one
		// pass reports every error it can.
		if kd == model.KindVirtualMachine {
			var vd vmDoc
			if decodeValue(d.value, &vd) == nil {
				errs = append(errs, vmChecks(d, vd.Spec)...)
			}
		}
		return m, errs
	}
	// The schema passed, so the value has the shape of the document types.
	src := model.Source{File: d.file, Line: d.line}
	switch kd {
	case model.KindSite:
		var sd siteDoc
		if err := decodeValue(d.value, &sd); err != nil {
			errs = append(errs, Error{File: d.file, Line: d.line, Message: "cannot map document: " + err.Error()})
			return m, errs
		}
		m.s = &model.Site{Name: sd.Metadata.Name, Labels: sd.Metadata.Labels, Annotations: sd.Metadata.Annotations, Spec: sd.Spec, Source: src}
	case model.KindVirtualMachine:
		var vd vmDoc
		if err := decodeValue(d.value, &vd); err != nil {
			errs = append(errs, Error{File: d.file, Line: d.line, Message: "cannot map document: " + err.Error()})
			return m, errs
		}
		m.vm = &model.VirtualMachine{Name: vd.Metadata.Name, Site: vd.Metadata.Site, Labels: vd.Metadata.Labels, Annotations: vd.Metadata.Annotations, Spec: vd.Spec, Source: src}
		if verrs := vmChecks(d, m.vm.Spec); len(verrs) > 0 {
			errs = append(errs, verrs...)
			return m, errs
		}
	}
	m.valid = true
	return m, errs
}

type siteDoc struct {
	Metadata struct {
		Name        string            `json:"name"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec model.SiteSpec `json:"spec"`
}

type vmDoc struct {
	Metadata struct {
		Name        string            `json:"name"`
		Site        string            `json:"site"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec model.VMSpec `json:"spec"`
}

// reservedDiskNames are used by the agent for the root and cloud-init disks.
var reservedDiskNames = []string{"root", "cidata"}

// vmChecks are the rules within one VM that JSON Schema cannot state
// readably.
func vmChecks(d *document, s model.VMSpec) Errors {
	var errs Errors
	at := func(msg string, loc ...string) {
		errs = append(errs, Error{File: d.file, Line: d.lineOf(loc), Path: displayPath(d.value, loc), Message: msg})
	}
	switch {
	case s.Kernel == nil && s.Firmware == nil:
		at("exactly one of kernel or firmware is required (the boot payload)", "spec")
	case s.Kernel != nil && s.Firmware != nil:
		at("kernel and firmware are mutually exclusive: keep one", "spec", "firmware")
	}
	if s.MaxCPUs != 0 && s.MaxCPUs < s.CPUs {
		at(fmt.Sprintf("must be >= spec.cpus (%d)", s.CPUs), "spec", "maxCpus")
	}
	if s.MaxMemoryMiB != 0 && s.MaxMemoryMiB < s.MemoryMiB {
		at(fmt.Sprintf("must be >= spec.memoryMiB (%d)", s.MemoryMiB), "spec", "maxMemoryMiB")
	}
	seen := map[string]int{}
	for i, disk := range s.Disks {
		idx := fmt.Sprint(i)
		if slices.Contains(reservedDiskNames, disk.Name) {
			at(fmt.Sprintf("disk name %q is reserved for the agent (%s)", disk.Name, strings.Join(reservedDiskNames, ", ")), "spec", "disks", idx, "name")
		}
		if first, dup := seen[disk.Name]; dup {
			at(fmt.Sprintf("duplicate disk name %q (also spec.disks[%d])", disk.Name, first), "spec", "disks", idx, "name")
		}
		seen[disk.Name] = i
	}
	macs := map[string]int{}
	for i, n := range s.Networks {
		if n.MAC == "" {
			continue
		}
		mac := strings.ToLower(n.MAC)
		if first, dup := macs[mac]; dup {
			at(fmt.Sprintf("duplicate MAC address %s (also spec.networks[%d])", n.MAC, first), "spec", "networks", fmt.Sprint(i), "mac")
		}
		macs[mac] = i
	}
	return errs
}

// check runs the set checks and builds the desired state from the valid
// documents.
func (l *loader) check() model.Desired {
	at := func(m *manifest, msg string, loc ...string) {
		l.errs = append(l.errs, Error{File: m.doc.file, Line: m.doc.lineOf(loc), Path: displayPath(m.doc.value, loc), Message: msg})
	}
	where := func(m *manifest) string {
		return fmt.Sprintf("%s:%d", m.doc.file, m.doc.lineOf([]string{"metadata", "name"}))
	}
	sites := make(map[string]*manifest, len(l.docs)/8)
	nSites := 0
	for _, m := range l.docs {
		if m.kind != model.KindSite || m.name == "" {
			continue
		}
		if first, dup := sites[m.name]; dup {
			at(m, fmt.Sprintf("duplicate Site %q (first defined at %s)", m.name, where(first)), "metadata", "name")
			continue
		}
		sites[m.name] = m
		nSites++
		if nSites == MaxSites+1 {
			at(m, fmt.Sprintf("too many sites: limit MaxSites is %d", MaxSites), "metadata", "name")
		}
	}
	type vmKey struct{ site, name string }
	vms := make(map[vmKey]*manifest, len(l.docs))
	perSite := make(map[string]int, len(sites))
	macs := map[string]string{} // site + mac -> where
	for _, m := range l.docs {
		if m.kind != model.KindVirtualMachine || m.name == "" || m.site == "" {
			continue
		}
		k := vmKey{m.site, m.name}
		if first, dup := vms[k]; dup {
			at(m, fmt.Sprintf("duplicate VirtualMachine %q at site %q (first defined at %s)", m.name, m.site, where(first)), "metadata", "name")
			continue
		}
		vms[k] = m
		site, ok := sites[m.site]
		if !ok {
			if !l.brokenFile { // the Site may be in the file that failed to parse
				at(m, fmt.Sprintf("site %q is not defined by any Site manifest", m.site), "metadata", "site")
			}
			continue
		}
		perSite[m.site]++
		if perSite[m.site] == MaxVMsPerSite+1 {
			at(site, fmt.Sprintf("site %q has more than %d VMs (limit MaxVMsPerSite); the first one over is at %s", m.site, MaxVMsPerSite, where(m)), "metadata", "name")
		}
		if m.vm == nil {
			continue
		}
		for i, n := range m.vm.Spec.Networks {
			if n.MAC == "" {
				continue
			}
			key := m.site + "/" + strings.ToLower(n.MAC)
			loc := []string{"spec", "networks", fmt.Sprint(i), "mac"}
			here := fmt.Sprintf("%s:%d", m.doc.file, m.doc.lineOf(loc))
			if first, dup := macs[key]; dup && first != here {
				at(m, fmt.Sprintf("MAC address %s is already used at site %q (%s)", n.MAC, m.site, first), loc...)
				continue
			}
			macs[key] = here
		}
	}

	// Sort pointers, then copy each value once into a slice of its final
	// size: the values are large, and a tree can hold 50,000 of them.
	var sitesOut, vmsOut []*manifest
	for _, m := range l.docs {
		switch {
		case !m.valid:
		case m.s != nil:
			sitesOut = append(sitesOut, m)
		case m.vm != nil:
			vmsOut = append(vmsOut, m)
		}
	}
	slices.SortFunc(sitesOut, func(a, b *manifest) int { return strings.Compare(a.s.Name, b.s.Name) })
	slices.SortFunc(vmsOut, func(a, b *manifest) int {
		if c := strings.Compare(a.vm.Site, b.vm.Site); c != 0 {
			return c
		}
		return strings.Compare(a.vm.Name, b.vm.Name)
	})
	var d model.Desired
	if len(sitesOut) > 0 {
		d.Sites = make([]model.Site, len(sitesOut))
		for i, m := range sitesOut {
			d.Sites[i] = *m.s
		}
	}
	if len(vmsOut) > 0 {
		d.VMs = make([]model.VirtualMachine, len(vmsOut))
		for i, m := range vmsOut {
			d.VMs[i] = *m.vm
		}
	}
	return d
}
