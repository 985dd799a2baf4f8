package source

import (
	"errors"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// TreeFS is a read-only fs.FS over a git tree: manifests are read straight
// from the commit, with no checkout. Symlinks and submodules show as
// non-regular entries (schema.Load refuses them); nothing outside the tree
// is reachable. Every tree object is checked against MaxTreeObjectBytes
// by its header before it is decoded, and a blob's size comes from its
// header: nothing of a blob is read until the file is read.
type TreeFS struct {
	store storer.EncodedObjectStorer
	tree  *object.Tree
	when  time.Time // the commit time, reported as every entry's ModTime

	// gitMu serialises Open and Read: schema loads files in parallel, and
	// neither go-git's object storage (shared pack descriptors) nor a
	// decoded tree's lazily built entry map is safe for concurrent use.
	// Parsing, the costly part, still runs in parallel.
	gitMu sync.Mutex

	mu    sync.Mutex
	trees map[plumbing.Hash]*object.Tree // decoded trees by hash: a subtree
	// named at many paths, or a directory of 1,000 manifests, is decoded once
	blobs map[string]string // manifest path → blob hash, as the loader keyed them
}

// noteBlob remembers the blob hash the loader keyed the file at p by.
func (t *TreeFS) noteBlob(p string, h plumbing.Hash) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.blobs == nil {
		t.blobs = map[string]string{}
	}
	t.blobs[p] = h.String()
}

// BlobHashes returns the blob hashes BlobKey noted while a loader walked
// t: manifest path → blob hash.
func (t *TreeFS) BlobHashes() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.blobs
}

// Hash is the hash of the tree t serves: equal hashes, equal files.
func (t *TreeFS) Hash() plumbing.Hash { return t.tree.Hash }

// BlobKey names a file of a TreeFS by its blob hash, read from the tree
// object (equal hashes are equal contents), for schema.NewCache; "" for a
// file of any other fs.FS. The hash is also noted in the TreeFS
// (BlobHashes), so a caller can tell which files are unchanged.
func BlobKey(p string, d fs.DirEntry) string {
	if de, ok := d.(dirEntry); ok {
		if de.fsys != nil {
			de.fsys.noteBlob(p, de.hash)
		}
		return de.hash.String()
	}
	return ""
}

// NewTreeFS serves tree, read from s, as a file system whose entries all
// carry the time when. Mirror.CommitFS is the usual way to get one; this
// is for a tree read from another repository.
func NewTreeFS(s storer.EncodedObjectStorer, tree *object.Tree, when time.Time) *TreeFS {
	return &TreeFS{store: s, tree: tree, when: when}
}

// subtree decodes the tree object h, once.
func (t *TreeFS) subtree(h plumbing.Hash) (*object.Tree, error) {
	t.mu.Lock()
	d, ok := t.trees[h]
	t.mu.Unlock()
	if ok {
		return d, nil
	}
	d, err := boundedTree(t.store, h)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if t.trees == nil {
		t.trees = map[plumbing.Hash]*object.Tree{}
	}
	t.trees[h] = d
	t.mu.Unlock()
	return d, nil
}

// dir returns the subtree at p ("." = root), resolving it one name at a
// time from the root.
func (t *TreeFS) dir(p string) (*object.Tree, error) {
	cur := t.tree
	if p == "." || p == "" {
		return cur, nil
	}
	for _, name := range strings.Split(p, "/") {
		e, err := cur.FindEntry(name)
		if err != nil {
			return nil, err
		}
		if e.Mode != filemode.Dir {
			return nil, object.ErrDirectoryNotFound
		}
		if cur, err = t.subtree(e.Hash); err != nil {
			return nil, err
		}
	}
	return cur, nil
}

func (t *TreeFS) Open(name string) (fs.File, error) {
	t.gitMu.Lock()
	defer t.gitMu.Unlock()
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		return &treeDir{fsys: t, tree: t.tree, name: "."}, nil
	}
	parent, err := t.dir(path.Dir(name))
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: notExist(err)}
	}
	e, err := parent.FindEntry(path.Base(name))
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	switch e.Mode {
	case filemode.Dir:
		sub, err := t.subtree(e.Hash)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &treeDir{fsys: t, tree: sub, name: path.Base(name)}, nil
	case filemode.Regular, filemode.Executable, filemode.Deprecated:
		// The object's header gives the size; the content is opened only
		// when the file is read (schema.Load never reads a file over
		// MaxFileBytes, and the mirror streams large objects from disk).
		obj, err := t.store.EncodedObject(plumbing.BlobObject, e.Hash)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &treeFile{obj: obj, gitMu: &t.gitMu, info: entryInfo{name: path.Base(name), mode: e.Mode, size: obj.Size(), when: t.when}}, nil
	}
	// Symlinks and submodules are opened as empty non-regular files: the
	// loader sees their type and refuses them; their targets are never read.
	return &treeFile{info: entryInfo{name: path.Base(name), mode: e.Mode, when: t.when}}, nil
}

// notExist keeps a refused tree object's error (it names the limit) and
// turns a missing path into fs.ErrNotExist.
func notExist(err error) error {
	if errors.Is(err, errTreeTooLarge) {
		return err
	}
	return fs.ErrNotExist
}

type entryInfo struct {
	name string
	mode filemode.FileMode
	size int64
	when time.Time
}

func (i entryInfo) Name() string { return i.name }
func (i entryInfo) Size() int64  { return i.size }
func (i entryInfo) Mode() fs.FileMode {
	switch i.mode {
	case filemode.Dir:
		return fs.ModeDir | 0o555
	case filemode.Regular, filemode.Deprecated:
		return 0o444
	case filemode.Executable:
		return 0o555
	case filemode.Symlink:
		return fs.ModeSymlink | 0o777
	}
	return fs.ModeIrregular
}
func (i entryInfo) ModTime() time.Time         { return i.when }
func (i entryInfo) IsDir() bool                { return i.mode == filemode.Dir }
func (i entryInfo) Sys() any                   { return nil }
func (i entryInfo) Type() fs.FileMode          { return i.Mode().Type() }
func (i entryInfo) Info() (fs.FileInfo, error) { return i, nil }

type treeFile struct {
	obj   plumbing.EncodedObject // nil: an empty non-regular file
	gitMu *sync.Mutex            // the TreeFS's: held while reading
	rc    io.ReadCloser          // opened at the first Read
	info  entryInfo
}

func (f *treeFile) Stat() (fs.FileInfo, error) { return f.info, nil }

func (f *treeFile) Read(b []byte) (int, error) {
	if f.obj == nil {
		return 0, io.EOF
	}
	f.gitMu.Lock()
	defer f.gitMu.Unlock()
	if f.rc == nil {
		rc, err := f.obj.Reader()
		if err != nil {
			return 0, err
		}
		f.rc = rc
	}
	return f.rc.Read(b)
}

func (f *treeFile) Close() error {
	if f.rc == nil {
		return nil
	}
	f.gitMu.Lock()
	defer f.gitMu.Unlock()
	return f.rc.Close()
}

type treeDir struct {
	fsys *TreeFS
	tree *object.Tree
	name string
	read int
}

func (d *treeDir) Stat() (fs.FileInfo, error) {
	return entryInfo{name: d.name, mode: filemode.Dir, when: d.fsys.when}, nil
}
func (d *treeDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: errors.New("is a directory")}
}
func (d *treeDir) Close() error { return nil }

// ReadDir lists entries sorted by name, as fs.ReadDirFile requires.
func (d *treeDir) ReadDir(n int) ([]fs.DirEntry, error) {
	entries := make([]fs.DirEntry, 0, len(d.tree.Entries))
	for _, e := range d.tree.Entries {
		entries = append(entries, dirEntry{entryInfo{name: e.Name, mode: e.Mode, when: d.fsys.when}, d.tree, e.Hash, d.fsys})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	entries = entries[min(d.read, len(entries)):]
	if n <= 0 {
		d.read += len(entries)
		return entries, nil
	}
	if len(entries) == 0 {
		return nil, io.EOF
	}
	entries = entries[:min(n, len(entries))]
	d.read += len(entries)
	return entries, nil
}

// dirEntry reads the blob size only when Info asks: walking a large tree
// needs names and types, not sizes.
type dirEntry struct {
	entryInfo
	tree *object.Tree
	hash plumbing.Hash // the entry's object
	fsys *TreeFS
}

func (e dirEntry) Info() (fs.FileInfo, error) {
	i := e.entryInfo
	if i.mode.IsFile() {
		sz, err := e.tree.Size(i.name)
		if err != nil {
			return nil, err
		}
		i.size = sz
	}
	return i, nil
}
