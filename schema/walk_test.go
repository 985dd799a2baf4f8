package schema

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

// openCounter counts the manifest files opened through it: a load stopped
// by a tree limit must open none.
type openCounter struct {
	fs.FS
	opened int
}

func (o *openCounter) Open(name string) (fs.File, error) {
	if isManifestFile(name) {
		o.opened++
	}
	return o.FS.Open(name)
}

// TestWalkLimitsStopBeforeReading: each tree limit is reported by name at
// the first entry over it, and no manifest is read.
func TestWalkLimitsStopBeforeReading(t *testing.T) {
	deep := strings.Repeat("d/", MaxTreeDepth) + "site.yaml"
	for _, tc := range []struct {
		name  string
		files func() fstest.MapFS
		want  string
	}{
		{"MaxTreeEntries", func() fstest.MapFS {
			m := fstest.MapFS{"a-site.yaml": {Data: []byte(siteStore)}}
			// Files that are not manifests count as entries too.
			for i := range MaxTreeEntries {
				m[fmt.Sprintf("f%06d.txt", i)] = &fstest.MapFile{Data: []byte("x")}
			}
			return m
		}, fmt.Sprintf("f%06d.txt: too many files and directories: limit MaxTreeEntries is %d", MaxTreeEntries-1, MaxTreeEntries)},
		{"MaxTreeDepth", func() fstest.MapFS {
			return fstest.MapFS{"a-site.yaml": {Data: []byte(siteStore)}, deep: {Data: []byte(siteStore)}}
		}, fmt.Sprintf("%s: directories nest too deep: limit MaxTreeDepth is %d", deep, MaxTreeDepth)},
		{"MaxFiles", func() fstest.MapFS {
			m := fstest.MapFS{}
			for i := range MaxFiles + 1 {
				m[fmt.Sprintf("f%05d.yaml", i)] = &fstest.MapFile{Data: []byte(siteStore)}
			}
			return m
		}, fmt.Sprintf("f%05d.yaml: too many manifest files: limit MaxFiles is %d", MaxFiles, MaxFiles)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := &openCounter{FS: tc.files()}
			got := errorLines(t, fsys)
			if want := []string{tc.want}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("errors = %q, want %q", got, want)
			}
			if fsys.opened != 0 {
				t.Errorf("%d manifest files opened after the limit, want none", fsys.opened)
			}
		})
	}
}

// TestLoadContextEnds: a load whose context has ended stops with the
// context's cause, not with a verdict on the manifests.
func TestLoadContextEnds(t *testing.T) {
	cause := errors.New("load budget spent")
	ctx, cancel := context.WithCancelCause(t.Context())
	cancel(cause)
	_, err := LoadContext(ctx, mapFS(map[string]string{"site.yaml": siteStore}))
	if !errors.Is(err, cause) {
		t.Fatalf("LoadContext after the context ended: %v, want it to wrap %v", err, cause)
	}
	var errs Errors
	if errors.As(err, &errs) {
		t.Errorf("an ended context reported as invalid manifests: %v", err)
	}
}
