package schema

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"
)

// streamFS serves one file of a given size whose bytes are generated on the
// fly, so a test can offer a 100 MB file without holding it in memory. It
// counts the bytes Load actually read.
type streamFS struct {
	name      string
	size      int64
	statSize  int64 // what Stat claims; 0 pretends an unknown size
	bytesRead *int64
}

func (s streamFS) Open(name string) (fs.File, error) {
	// "." is listed through ReadDir; only the file itself is ever opened.
	if name == s.name {
		return &streamFile{fs: s}, nil
	}
	return nil, fs.ErrNotExist
}

func (s streamFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if name != "." {
		return nil, fs.ErrNotExist
	}
	return []fs.DirEntry{fs.FileInfoToDirEntry(streamInfo{name: s.name, size: s.statSize})}, nil
}

func (s streamFS) Stat(name string) (fs.FileInfo, error) {
	if name == "." {
		return streamInfo{name: ".", dir: true}, nil
	}
	if name == s.name {
		return streamInfo{name: s.name, size: s.statSize}, nil
	}
	return nil, fs.ErrNotExist
}

type streamFile struct {
	fs  streamFS
	off int64
}

const streamLine = "key: value-value-value\n"

func (f *streamFile) Read(p []byte) (int, error) {
	if f.off >= f.fs.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && f.off < f.fs.size {
		p[n] = streamLine[f.off%int64(len(streamLine))]
		n++
		f.off++
	}
	*f.fs.bytesRead += int64(n)
	return n, nil
}
func (f *streamFile) Stat() (fs.FileInfo, error) {
	return streamInfo{name: f.fs.name, size: f.fs.statSize}, nil
}
func (f *streamFile) Close() error { return nil }

type streamInfo struct {
	name string
	size int64
	dir  bool
}

func (i streamInfo) Name() string { return i.name }
func (i streamInfo) Size() int64  { return i.size }
func (i streamInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
func (i streamInfo) ModTime() time.Time { return time.Time{} }
func (i streamInfo) IsDir() bool        { return i.dir }
func (i streamInfo) Sys() any           { return nil }

func TestLoadHugeFile(t *testing.T) {
	const size = 100 << 20
	for _, tt := range []struct {
		name     string
		statSize int64
		maxRead  int64
	}{
		{"size known from stat", size, 0},
		{"size unknown until read", 0, MaxFileBytes + 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var read int64
			fsys := streamFS{name: "huge.yaml", size: size, statSize: tt.statSize, bytesRead: &read}
			got := errorLines(t, fsys)
			want := []string{"huge.yaml: file is larger than 1 MiB: limit MaxFileBytes (split it into several files)"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("errors = %q, want %q", got, want)
			}
			if read > tt.maxRead {
				t.Errorf("read %d bytes of a %d byte file, want at most %d", read, int64(size), tt.maxRead)
			}
		})
	}
}

// errorLines runs Load and returns its errors as lines; anything but
// schema.Errors fails the test.
func errorLines(t *testing.T, fsys fs.FS) []string {
	t.Helper()
	_, err := Load(fsys)
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Load: want schema.Errors, got %v", err)
	}
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Error()
	}
	return out
}

func TestLoadHostile(t *testing.T) {
	// A classic "billion laughs": 9 levels of 9 aliases each expand to 9^9 nodes.
	var bomb strings.Builder
	bomb.WriteString("apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: bomb\n  labels:\n")
	bomb.WriteString("    l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&bomb, "    l%d: &l%d [", i, i)
		for j := range 9 {
			if j > 0 {
				bomb.WriteString(", ")
			}
			fmt.Fprintf(&bomb, "*l%d", i-1)
		}
		bomb.WriteString("]\n")
	}
	manyAliases := "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: &n many\n  labels:\n" +
		strings.Repeat("    - *n\n", MaxAliasesPerDocument+1)
	manyAliases = strings.Replace(manyAliases, "  labels:\n", "  labels:\n    x:\n", 1)

	// Few aliases of a large anchored value: the node count trips first.
	wide := "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: wide\n  labels:\n    a: &a [" +
		strings.TrimSuffix(strings.Repeat("x, ", 500), ", ") + "]\n    b: [" + strings.TrimSuffix(strings.Repeat("*a, ", 30), ", ") + "]\n"

	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{
			name:  "alias expansion bomb",
			files: map[string]string{"bomb.yaml": bomb.String()},
			want:  []string{fmt.Sprintf("bomb.yaml:9: metadata.labels.l3[0][0]: more than %d aliases in one document (limit MaxAliasesPerDocument)", MaxAliasesPerDocument)},
		},
		{
			name:  "wide alias expansion",
			files: map[string]string{"wide.yaml": wide},
			want:  []string{fmt.Sprintf("wide.yaml:1: document too large: more than %d YAML nodes after alias expansion (limit MaxNodesPerDocument)", MaxNodesPerDocument)},
		},
		{
			name:  "too many aliases",
			files: map[string]string{"a.yaml": manyAliases},
			want:  []string{fmt.Sprintf("a.yaml:107: metadata.labels.x[100]: more than %d aliases in one document (limit MaxAliasesPerDocument)", MaxAliasesPerDocument)},
		},
		{
			name:  "self-referencing alias",
			files: map[string]string{"a.yaml": "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata: &m {name: x, labels: *m}\n"},
			want:  []string{"a.yaml:3: metadata" + strings.Repeat(".labels", 30) + ".name: nesting deeper than 32 levels (limit MaxDepth)"},
		},
		{
			name:  "unknown anchor",
			files: map[string]string{"a.yaml": "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: *nope\n"},
			want:  []string{"a.yaml:4: YAML syntax: unknown anchor 'nope' referenced"},
		},
		{
			name:  "deep nesting",
			files: map[string]string{"deep.yaml": "apiVersion: nkudo.io/v1alpha1\nkind: Site\nspec: " + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "\n"},
			want:  []string{"deep.yaml:3: spec[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]: nesting deeper than 32 levels (limit MaxDepth)"},
		},
		{
			name:  "very deep nesting stops in the parser",
			files: map[string]string{"deep.yaml": "a: " + strings.Repeat("[", 200000) + "\n"},
			want:  []string{"deep.yaml: YAML syntax: exceeded max depth of 10000"},
		},
		{
			name:  "100k empty documents",
			files: map[string]string{"many.yaml": strings.Repeat("---\n", 100000)},
			want:  []string{fmt.Sprintf("many.yaml:1001: too many documents in one file: limit MaxDocumentsPerFile is %d", MaxDocumentsPerFile)},
		},
		{
			name:  "NUL bytes",
			files: map[string]string{"a.yaml": "apiVersion: nkudo.io/v1alpha1\nkind: Site\x00\n"},
			want:  []string{"a.yaml:2: YAML syntax: control characters are not allowed"},
		},
		{
			name:  "UTF-16 with a byte order mark",
			files: map[string]string{"a.yaml": "\xff\xfea\x00:\x00 \x001\x00\n\x00"},
			want:  []string{"a.yaml:1: file is not valid UTF-8 (manifests must be UTF-8 text)"},
		},
		{
			name: "huge number",
			files: map[string]string{
				"s.yaml": siteStore,
				"a.yaml": strings.Replace(vmDocText("a", "store-042"), "cpus: 2", "cpus: 99999999999999999999999", 1),
			},
			want: []string{"a.yaml:8: spec.cpus: must be <= 256"},
		},
		{
			name:  "key that is not a string",
			files: map[string]string{"a.yaml": "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata: {name: x}\n? [a, b]\n: c\n"},
			want:  []string{"a.yaml:4: mapping keys must be plain strings"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := loadErrors(t, tt.files)
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tt.want) {
				t.Errorf("errors:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestLoadManyDocuments(t *testing.T) {
	// 100k small mapping documents: each before the limit is reported, then
	// the limit stops the file.
	got := loadErrors(t, map[string]string{"many.yaml": strings.Repeat("---\n{}\n", 100000)})
	if n := len(got); n != 2*MaxDocumentsPerFile+1 {
		t.Errorf("got %d errors, want %d", n, 2*MaxDocumentsPerFile+1)
	}
	want := fmt.Sprintf("many.yaml:2001: too many documents in one file: limit MaxDocumentsPerFile is %d", MaxDocumentsPerFile)
	if last := got[len(got)-1]; last != want {
		t.Errorf("last error = %q, want %q", last, want)
	}
}
