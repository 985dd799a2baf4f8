package main

import (
	"fmt"

	"github.com/nkudo/nkudo/internal/version"
)

// VersionCmd prints the build identity of this binary.
type VersionCmd struct {
	OutputFlag
}

// Run prints "nkudo v1.2.3 (commit …, built …, go… linux/amd64)", or with
// -o json the build identity as an object.
func (c *VersionCmd) Run(g *Globals) error {
	if c.Output == "json" {
		return writeJSON(g.stdout, version.Get())
	}
	_, err := fmt.Fprintln(g.stdout, "nkudo", version.String())
	return err
}
