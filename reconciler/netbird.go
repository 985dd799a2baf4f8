package reconciler

import (
	"context"
	"errors"
	"fmt"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// netbirdGroups returns, for each of sites whose Site in l asks for NetBird
// groups, the groups its previous desired state asked for (nil for a site
// planned for the first time), for diff.Options.NetBirdGroups: a commit
// that changes a site's groups then names the change in its plan summary.
// Membership itself is set by the control plane's NetBird sync, from the
// desired state recorded with the plan. Nil sites means every site in l.
func (r *Reconciler) netbirdGroups(ctx context.Context, tenant string, l *loaded, sites []string) (map[string][]string, error) {
	var only map[string]bool
	if sites != nil {
		only = make(map[string]bool, len(sites))
		for _, s := range sites {
			only[s] = true
		}
	}
	var out map[string][]string
	for _, s := range l.desired.Sites {
		if s.Spec.NetBird == nil || (only != nil && !only[s.Name]) {
			continue
		}
		if _, done := out[s.Name]; done {
			continue
		}
		d, err := r.store.DesiredState(ctx, tenant, s.Name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("previous desired state of %s: %w", s.Name, err)
		}
		if out == nil {
			out = map[string][]string{}
		}
		out[s.Name] = previousGroups(d.Document)
	}
	return out, nil
}

// previousGroups is the NetBird groups a previous Site document asked for;
// nil when there is none or it had no netbird section.
func previousGroups(site *model.Site) []string {
	if site == nil || site.Spec.NetBird == nil {
		return nil
	}
	return site.Spec.NetBird.Groups
}
