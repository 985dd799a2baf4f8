// Package manifestsexample holds the example tenant repository, embedded so
// that a binary (`nkudo demo`) can start from it in any directory. The
// directory itself stays a plain manifest tree: this file is the only Go in
// it, and manifest loaders read only *.yaml and *.yml.
package manifestsexample

import (
	"embed"
	"io/fs"
)

//go:embed README.md sites vms
var files embed.FS

// FS returns the example repository: README.md, sites/ and vms/ at its root.
func FS() fs.FS { return files }
