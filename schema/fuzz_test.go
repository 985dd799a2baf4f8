package schema

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// FuzzLoad feeds arbitrary bytes as one manifest file next to a valid Site.
// Load must never panic, and must answer with a Desired, Errors pointing
// into the file, or ErrNoManifests.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(siteStore))
	f.Add([]byte(vmDocText("pos-1", "store-042")))
	f.Add([]byte(vmDocText("pos-1", "store-042") + "---\n" + vmDocText("pos-2", "store-042")))
	f.Add([]byte("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"))
	f.Add([]byte("key: [unclosed\n"))
	f.Add([]byte("a: 1\na: 2\n"))
	f.Add([]byte("<<: {a: 1}\n"))
	f.Add([]byte(strings.Repeat("[", 50)))
	f.Add([]byte("---\n---\n~\n"))
	f.Add([]byte("\xff\xfe"))
	f.Add([]byte("\r0"))
	f.Add([]byte("apiVersion: nkudo.io/v1alpha1\nkind: VirtualMachine\nmetadata: {name: x, site: store-042}\nspec: {cpus: .nan}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := fstest.MapFS{
			"site.yaml": {Data: []byte(siteStore)},
			"f.yaml":    {Data: data},
		}
		d, err := Load(fsys)
		if err == nil {
			if len(d.Sites) == 0 {
				t.Fatal("valid load without the Site")
			}
			return
		}
		var errs Errors
		if !errors.As(err, &errs) {
			if errors.Is(err, ErrNoManifests) {
				t.Fatal("ErrNoManifests although site.yaml is valid")
			}
			t.Fatalf("unexpected error type: %v", err)
		}
		if len(errs) == 0 {
			t.Fatal("empty Errors")
		}
		// YAML breaks lines at LF, CRLF and a lone CR, and so do the
		// line numbers it reports.
		lines := bytes.Count(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\n")) +
			bytes.Count(bytes.ReplaceAll(data, []byte("\r\n"), nil), []byte("\r")) + 1
		for _, e := range errs {
			if e.File != "f.yaml" && !strings.Contains(e.Message, "duplicate Site") {
				t.Errorf("error in the valid file: %v", e)
			}
			if e.File != "f.yaml" {
				continue
			}
			if e.Line < 0 || e.Line > lines {
				t.Errorf("line %d outside the %d-line file: %v", e.Line, lines, e)
			}
			if e.Message == "" {
				t.Errorf("empty message: %#v", e)
			}
		}
		if !slices.IsSortedFunc(errs, func(a, b Error) int {
			if a.File != b.File {
				return strings.Compare(a.File, b.File)
			}
			return a.Line - b.Line
		}) {
			t.Errorf("errors not sorted: %v", errs)
		}
	})
}
