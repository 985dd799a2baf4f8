package forge

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
)

// Upsert implements Commenter with the merge request notes API
// (/projects/:id/merge_requests/:iid/notes); pr is the merge request IID.
// System notes ("added 1 commit") are never ours.
func (g *GitLab) Upsert(ctx context.Context, pr int, marker, body string, create bool) error {
	if pr <= 0 {
		return fmt.Errorf("comment: merge request IID %d must be positive", pr)
	}
	notes := g.projectPath() + "/merge_requests/" + strconv.Itoa(pr) + "/notes"
	return upsertMarked(ctx, commentAPI{
		do:         g.do,
		list:       notes + "?per_page=100&page=",
		create:     notes,
		edit:       notes + "/",
		editMethod: http.MethodPut,
		noun:       "note",
	}, marker, body, create)
}
