package controlplane

import (
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/localsource"
)

// checkRepoSource refuses a repository URL a tenant may not name: a path
// or file:// URL unless the operator allows local sources, never one
// inside the server's own directories, and no network scheme the egress
// policy cannot police (git://). The reconciler checks again at every
// fetch; this gives the tenant the reason at once.
func (s *Server) checkRepoSource(rawURL string) error {
	p := localsource.Policy{Allow: s.opts.AllowLocalSources, Protected: s.opts.ProtectedDirs}
	if err := p.Check(rawURL); err != nil {
		return badRequest("field \"url\" %q: %v", rawURL, err)
	}
	if err := egress.CheckGitURL(rawURL); err != nil {
		return badRequest("field \"url\" %q: %v", rawURL, err)
	}
	return nil
}
