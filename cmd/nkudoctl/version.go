package main

import (
	"fmt"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/internal/version"
)

// VersionCmd prints nkudoctl's build identity and the API protocol it speaks.
type VersionCmd struct{}

// Help is the long help text.
func (c *VersionCmd) Help() string {
	return `Prints the build identity of nkudoctl and the API protocol version it
speaks. It does not contact the control plane: the API does not report the
server's version; run "nkudo version" on the control-plane host for that.`
}

// versionOutput is the -o json form.
type versionOutput struct {
	version.Info
	ProtocolVersion int `json:"protocolVersion"`
}

// Run prints two lines, "nkudoctl v1.2.3 (commit …, built …, go… os/arch)"
// and "api protocol N", or one JSON object.
func (c *VersionCmd) Run(g *Globals, s *Streams) error {
	if g.Output == "json" {
		return writeJSON(s, versionOutput{Info: version.Get(), ProtocolVersion: api.ProtocolVersion})
	}
	_, err := fmt.Fprintf(s.Out, "nkudoctl %s\napi protocol %d\n", version.String(), api.ProtocolVersion)
	return err
}
