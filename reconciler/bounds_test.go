package reconciler_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/schema"
	"github.com/nkudo/nkudo/store"
)

// objectWriter writes git objects straight into a bare repository with
// go-git: trees that share subtrees cannot be made with a working tree.
type objectWriter struct {
	t    testing.TB
	repo *git.Repository
}

func openObjects(t testing.TB, dir string) *objectWriter {
	t.Helper()
	repo, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &objectWriter{t: t, repo: repo}
}

func (w *objectWriter) blob(content string) plumbing.Hash {
	w.t.Helper()
	o := w.repo.Storer.NewEncodedObject()
	o.SetType(plumbing.BlobObject)
	wr, err := o.Writer()
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := io.WriteString(wr, content); err != nil {
		w.t.Fatal(err)
	}
	wr.Close()
	return w.put(o)
}

func (w *objectWriter) put(o plumbing.EncodedObject) plumbing.Hash {
	w.t.Helper()
	h, err := w.repo.Storer.SetEncodedObject(o)
	if err != nil {
		w.t.Fatal(err)
	}
	return h
}

// tree writes a tree of entries named prefix0…prefix9, all naming h.
func (w *objectWriter) tree(prefix, suffix string, mode filemode.FileMode, h plumbing.Hash) plumbing.Hash {
	w.t.Helper()
	t := &object.Tree{}
	for i := range 10 {
		t.Entries = append(t.Entries, object.TreeEntry{Name: fmt.Sprintf("%s%d%s", prefix, i, suffix), Mode: mode, Hash: h})
	}
	o := w.repo.Storer.NewEncodedObject()
	if err := t.Encode(o); err != nil {
		w.t.Fatal(err)
	}
	return w.put(o)
}

func (w *objectWriter) treeOf(entries ...object.TreeEntry) plumbing.Hash {
	w.t.Helper()
	o := w.repo.Storer.NewEncodedObject()
	if err := (&object.Tree{Entries: entries}).Encode(o); err != nil {
		w.t.Fatal(err)
	}
	return w.put(o)
}

// commit writes a commit of tree on branch main and returns it.
func (w *objectWriter) commit(tree plumbing.Hash) string {
	w.t.Helper()
	sig := object.Signature{Name: "Test", Email: "test@example.com", When: time.Now()}
	c := &object.Commit{Author: sig, Committer: sig, Message: "tree\n", TreeHash: tree}
	o := w.repo.Storer.NewEncodedObject()
	if err := c.Encode(o); err != nil {
		w.t.Fatal(err)
	}
	h := w.put(o)
	if err := w.repo.Storer.SetReference(plumbing.NewHashReference("refs/heads/main", h)); err != nil {
		w.t.Fatal(err)
	}
	return h.String()
}

// treeBomb commits, on branch main of the bare repository dir, a tree of
// six levels of ten entries each naming the same subtree: 10^6 paths of
// files named f0…f9 + suffix (all one Site manifest) in 7 objects of a few
// hundred bytes.
func treeBomb(t testing.TB, dir, suffix string) string {
	t.Helper()
	w := openObjects(t, dir)
	h := w.tree("f", suffix, filemode.Regular, w.blob(gittest.Site("site-0001")))
	for range 5 {
		h = w.tree("d", "", filemode.Dir, h)
	}
	return w.commit(h)
}

// refusedFor reconciles and checks that the commit is refused as invalid
// with one error naming limit.
func refusedFor(t *testing.T, e *env, limit string) {
	t.Helper()
	_, err := e.reconcile("")
	var serrs schema.Errors
	if !errors.Is(err, reconciler.ErrInvalidCommit) || !errors.As(err, &serrs) {
		t.Fatalf("reconcile: %v, want an invalid commit", err)
	}
	if len(serrs) != 1 || !strings.Contains(serrs[0].Message, "limit "+limit) {
		t.Fatalf("errors = %v, want one naming %s", serrs, limit)
	}
}

// TestTreeBombRefused: a commit whose shared subtrees name 10^6 paths is
// refused with the first limit the walk meets named (MaxFiles when the
// paths are manifests, MaxTreeEntries when they are not), and the walk,
// which would allocate gigabytes over every path, stays small.
func TestTreeBombRefused(t *testing.T) {
	for _, tc := range []struct{ suffix, limit string }{{".yaml", "MaxFiles"}, {".txt", "MaxTreeEntries"}} {
		t.Run(tc.limit, func(t *testing.T) {
			e := newEnv(t, []string{"site-0001"}, nil)
			head := treeBomb(t, e.git.Remote, tc.suffix)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			refusedFor(t, e, tc.limit)
			runtime.ReadMemStats(&after)
			// Walking every path allocates gigabytes; stopping at the first
			// limit stays far under 200 MB whatever the machine.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 200<<20 {
				t.Errorf("the refused load allocated %d MiB: the walk did not stop at the limit", alloc>>20)
			}
			if st := e.status(head, forge.ContextValidate); st.State != store.StateFailure || !strings.Contains(st.Description, tc.limit) {
				t.Errorf("nkudo/validate = %+v, want a failure naming %s", st, tc.limit)
			}
		})
	}
}

// TestDeepTreeRefused: directories nested deeper than MaxTreeDepth.
func TestDeepTreeRefused(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	w := openObjects(t, e.git.Remote)
	h := w.treeOf(object.TreeEntry{Name: "site.yaml", Mode: filemode.Regular, Hash: w.blob(gittest.Site("site-0001"))})
	for range schema.MaxTreeDepth + 8 {
		h = w.treeOf(object.TreeEntry{Name: "d", Mode: filemode.Dir, Hash: h})
	}
	w.commit(h)
	refusedFor(t, e, "MaxTreeDepth")
}

// TestHugeTreeObjectRefused: one directory listing over
// MaxTreeObjectBytes is refused by its header, before it is decoded.
func TestHugeTreeObjectRefused(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	w := openObjects(t, e.git.Remote)
	blob := w.blob(gittest.Site("site-0001"))
	var entries []object.TreeEntry
	for i := 0; len(entries)*60 < reconciler.MaxTreeObjectBytes+(1<<20); i++ {
		entries = append(entries, object.TreeEntry{Name: fmt.Sprintf("%s-%07d.yaml", strings.Repeat("n", 20), i), Mode: filemode.Regular, Hash: blob})
	}
	w.commit(w.treeOf(object.TreeEntry{Name: "fleet", Mode: filemode.Dir, Hash: w.treeOf(entries...)}))
	_, err := e.reconcile("")
	if err == nil || !strings.Contains(err.Error(), "limit MaxTreeObjectBytes") {
		t.Fatalf("reconcile: %v, want an error naming MaxTreeObjectBytes", err)
	}
}

// writeBig writes size bytes of lines (a manifest-looking comment
// repeated) to the working tree without holding them in memory.
func writeBig(t testing.TB, g *gittest.Repo, name string, size int64) {
	t.Helper()
	f, err := os.Create(filepath.Join(g.Work, name))
	if err != nil {
		t.Fatal(err)
	}
	line := "# " + strings.Repeat("x", 1021) + "\n"
	buf := []byte(strings.Repeat(line, 64))
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLargeBlobNeverRead: a manifest blob far over MaxFileBytes is refused
// by the size in its object header: neither the fetch into the mirror nor
// the load holds it in memory.
func TestLargeBlobNeverRead(t *testing.T) {
	const blobSize = 48 << 20
	e := newEnv(t, []string{"site-0001"}, nil)
	e.git.Fleet("fleet", 1, 1)
	writeBig(t, e.git, "fleet/big.yaml", blobSize)
	head := e.git.Commit("a large manifest")
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	refusedFor(t, e, "MaxFileBytes")
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > blobSize/2 {
		t.Errorf("fetching and refusing a %d MiB blob allocated %d MiB: it was read into memory", blobSize>>20, alloc>>20)
	}
	if st := e.status(head, forge.ContextValidate); st.State != store.StateFailure || !strings.Contains(st.Description, "big.yaml") {
		t.Errorf("nkudo/validate = %+v, want a failure naming big.yaml", st)
	}
}

// TestMirrorOverLimitChangesNothing: a fetch that takes the mirror over
// MaxMirrorBytes fails the reconcile with ErrMirrorTooLarge; nothing of
// the commit is planned or reported, the last applied commit stays, and
// the mirror is deleted.
func TestMirrorOverLimitChangesNothing(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) { o.MaxMirrorBytes = 2 << 20 })
	e.git.Fleet("fleet", 1, 1)
	first := e.git.Commit("one VM")
	if res := e.mustReconcile(); len(res.Stored) != 1 {
		t.Fatalf("first commit stored %d plans, want 1", len(res.Stored))
	}
	plans := len(e.plans())
	e.git.Fleet("fleet", 1, 2)
	noise := make([]byte, 4<<20) // incompressible: the mirror grows by as much
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	e.git.Write("assets/noise.bin", string(noise))
	second := e.git.Commit("a second VM and a large asset")
	_, err := e.reconcile("")
	if !errors.Is(err, reconciler.ErrMirrorTooLarge) || !strings.Contains(err.Error(), "MaxMirrorBytes") {
		t.Fatalf("reconcile: %v, want ErrMirrorTooLarge naming MaxMirrorBytes", err)
	}
	if n := len(e.plans()); n != plans {
		t.Errorf("%d plans after the refused fetch, want %d (unchanged)", n, plans)
	}
	repo, err := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	if err != nil {
		t.Fatal(err)
	}
	if repo.LastAppliedCommit != first || !strings.Contains(repo.LastError, "MaxMirrorBytes") {
		t.Errorf("repository: last applied %s, last error %q; want %s and an error naming MaxMirrorBytes", repo.LastAppliedCommit, repo.LastError, first)
	}
	if st := e.status(second, forge.ContextValidate); st.State != "" {
		t.Errorf("the refused commit got nkudo/validate %+v, want no status", st)
	}
	if _, err := os.Stat(filepath.Join(e.opts.DataDir, "git", e.repo.ID+".git")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the oversized mirror is still on disk (stat: %v)", err)
	}
}

// heapMeter samples the live heap while a benchmark times, for the peak
// growth over the heap before it started.
type heapMeter struct {
	base, peak uint64
	stop       chan struct{}
	done       chan struct{}
}

func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeap() *heapMeter {
	runtime.GC()
	m := &heapMeter{base: liveHeap(), stop: make(chan struct{}), done: make(chan struct{})}
	m.peak = m.base
	go func() {
		defer close(m.done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				m.peak = max(m.peak, liveHeap())
			}
		}
	}()
	return m
}

func (m *heapMeter) report(b *testing.B) {
	close(m.stop)
	<-m.done
	m.peak = max(m.peak, liveHeap())
	b.ReportMetric(float64(m.peak-m.base)/(1<<20), "peak-heap-growth-MiB")
}

// benchRefused reconciles the repository's head with a fresh reconciler
// (and mirror) per iteration, expecting check to accept the error; it
// reports CPU per reconcile, the peak heap growth and the wall time of
// the fetch and load phases.
func benchRefused(b *testing.B, e *env, check func(error) bool) {
	var before, after runtime.MemStats
	var phases phaseTimes
	cpu := startCPU()
	cpu.pause()
	heap := startHeap()
	runtime.ReadMemStats(&before)
	for b.Loop() {
		b.StopTimer()
		o := e.opts
		o.DataDir = b.TempDir()
		rec, err := reconciler.New(o)
		if err != nil {
			b.Fatal(err)
		}
		cpu.resume()
		b.StartTimer()
		res, err := rec.Reconcile(b.Context(), e.repo, "")
		b.StopTimer()
		cpu.pause()
		rec.Close()
		phases.add(res)
		if !check(err) {
			b.Fatalf("reconcile: %v", err)
		}
		b.StartTimer()
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(cpu.total.Milliseconds())/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/(1<<20)/float64(b.N), "alloc-MiB/op")
	heap.report(b)
	phases.report(b)
}

func invalidFor(limit string) func(error) bool {
	return func(err error) bool {
		var serrs schema.Errors
		return errors.Is(err, reconciler.ErrInvalidCommit) && errors.As(err, &serrs) && strings.Contains(serrs.Error(), "limit "+limit)
	}
}

// BenchmarkTreeBombRefused reconciles a commit whose 7 tree objects name
// 10^6 manifest paths: fetch into a fresh mirror, walk until the first
// limit, refuse. Budget: under 1 s of CPU and 50 MiB of heap growth.
func BenchmarkTreeBombRefused(b *testing.B) {
	for _, tc := range []struct{ suffix, limit string }{{".yaml", "MaxFiles"}, {".txt", "MaxTreeEntries"}} {
		b.Run(tc.limit, func(b *testing.B) {
			e := newEnv(b, []string{"site-0001"}, nil)
			treeBomb(b, e.git.Remote, tc.suffix)
			benchRefused(b, e, invalidFor(tc.limit))
		})
	}
}

// BenchmarkLargeBlobRefused reconciles a commit holding a 300 MB manifest
// blob: fetch into a fresh mirror and refuse by the size in the object
// header. Without streaming, the blob cost its size in heap.
func BenchmarkLargeBlobRefused(b *testing.B) {
	e := newEnv(b, []string{"site-0001"}, nil)
	e.git.Fleet("fleet", 1, 1)
	writeBig(b, e.git, "fleet/big.yaml", 300<<20)
	e.git.Commit("a 300 MB manifest")
	benchRefused(b, e, invalidFor("MaxFileBytes"))
}

// TestLoadTimeoutIsNotAVerdict: a load over its time budget is an error
// naming LoadTimeout (nkudo/validate=error), not an invalid commit: a
// reconcile with time to spare applies the same commit.
func TestLoadTimeoutIsNotAVerdict(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, func(o *reconciler.Options) { o.LoadTimeout = time.Nanosecond })
	e.git.Fleet("fleet", 1, 1)
	head := e.git.Commit("one VM")
	_, err := e.reconcile("")
	if err == nil || errors.Is(err, reconciler.ErrInvalidCommit) || !strings.Contains(err.Error(), "LoadTimeout") {
		t.Fatalf("reconcile with a spent budget: %v, want an error naming LoadTimeout, not an invalid commit", err)
	}
	if st := e.status(head, forge.ContextValidate); st.State != store.StateError {
		t.Errorf("nkudo/validate = %+v, want error", st)
	}
	o := e.opts
	o.LoadTimeout = 0 // the default
	e.rec, err = reconciler.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.rec.Close)
	if res := e.mustReconcile(); !res.Valid || len(res.Stored) != 1 {
		t.Errorf("reconcile with the default budget: valid %v, %d plans stored; want valid, 1", res.Valid, len(res.Stored))
	}
}
