package main

import (
	"fmt"

	"github.com/nkudo/nkudo/internal/version"
)

// VersionCmd prints the build identity of this binary.
type VersionCmd struct{}

// Run prints "nkudo v1.2.3 (commit …, built …, go… linux/amd64)".
func (c *VersionCmd) Run(g *Globals) error {
	_, err := fmt.Fprintln(g.stdout, "nkudo", version.String())
	return err
}
