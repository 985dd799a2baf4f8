package forge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

type glNote struct {
	ID     int64  `json:"id"`
	Body   string `json:"body"`
	System bool   `json:"system"`
}

// Upsert implements Commenter with the merge request notes API
// (/projects/:id/merge_requests/:iid/notes); pr is the merge request IID.
// System notes ("added 1 commit") are never ours.
func (g *GitLab) Upsert(ctx context.Context, pr int, marker, body string, create bool) error {
	if pr <= 0 {
		return fmt.Errorf("comment: merge request IID %d must be positive", pr)
	}
	full := marker + "\n" + body
	notes := g.projectPath() + "/merge_requests/" + strconv.Itoa(pr) + "/notes"
	for page := 1; page <= commentPages; page++ {
		b, err := g.do(ctx, http.MethodGet, notes+"?per_page=100&page="+strconv.Itoa(page), nil, "list notes")
		if err != nil {
			return err
		}
		var list []glNote
		if err := json.Unmarshal(b, &list); err != nil {
			return &Error{Op: "list notes", Err: fmt.Errorf("decode: %w", err)}
		}
		for _, n := range list {
			if n.System || !hasMarker(n.Body, marker) {
				continue
			}
			if n.Body == full {
				return nil
			}
			in, err := json.Marshal(map[string]string{"body": full})
			if err != nil {
				return fmt.Errorf("encode note: %w", err)
			}
			_, err = g.do(ctx, http.MethodPut, notes+"/"+strconv.FormatInt(n.ID, 10), in, "edit note")
			return err
		}
		if len(list) == 0 {
			break
		}
	}
	if !create {
		return nil
	}
	in, err := json.Marshal(map[string]string{"body": full})
	if err != nil {
		return fmt.Errorf("encode note: %w", err)
	}
	_, err = g.do(ctx, http.MethodPost, notes, in, "create note")
	return err
}
