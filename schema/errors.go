package schema

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrNoManifests is wrapped by Load's error when a tree holds no manifest at
// all. An empty tree is never taken as "desired = nothing": that is how a
// transient empty fetch would wipe a fleet.
var ErrNoManifests = errors.New("no manifests found")

// Error is one problem in one manifest.
type Error struct {
	// File is the slash-separated path relative to the loaded tree.
	File string
	// Line is 1-based; zero means the whole file.
	Line int
	// Path names the field, like "spec.disks[0].sizeGiB"; empty for the
	// whole document or file.
	Path    string
	Message string
}

// Error formats as "file:line: path: message", leaving out what is unknown.
func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// Errors is every problem Load found, sorted by file, then line.
type Errors []Error

// Error joins all errors, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// sorted returns es ordered by file, line, path and message, without repeats.
func (es Errors) sorted() Errors {
	slices.SortStableFunc(es, func(a, b Error) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Message, b.Message),
		)
	})
	// The same fact can be found twice (e.g. two schema branches); say it once.
	return slices.Compact(es)
}
