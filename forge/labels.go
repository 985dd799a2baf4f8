package forge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// LabelReader reads the labels of a pull request, for the gates that a
// label opens (a plan that destroys VMs needs one). The forges whose
// writers keep plan comments implement it.
type LabelReader interface {
	// Labels returns the names of the labels pull request pr carries.
	Labels(ctx context.Context, pr int) ([]string, error)
}

// labelPages bounds the pages of labels read: a pull request with more than
// a thousand labels is not one whose gate a label is meant to open.
const labelPages = 10

// Labels implements LabelReader with the issue labels API, which GitHub
// (per_page, at most 100) and Gitea/Forgejo (limit, at most 50) both serve
// for pull requests.
func (g *GitHub) Labels(ctx context.Context, pr int) ([]string, error) {
	if pr <= 0 {
		return nil, fmt.Errorf("labels: pull request number %d must be positive", pr)
	}
	per := 100
	q := "?per_page=100&page="
	if g.gitea {
		per, q = 50, "?limit=50&page="
	}
	var out []string
	for page := 1; page <= labelPages; page++ {
		b, err := g.do(ctx, http.MethodGet, g.repoPath()+"/issues/"+strconv.Itoa(pr)+"/labels"+q+strconv.Itoa(page), nil, "list labels")
		if err != nil {
			return nil, err
		}
		var list []struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(b, &list); err != nil {
			return nil, &Error{Op: "list labels", Err: fmt.Errorf("decode: %w", err)}
		}
		for _, l := range list {
			out = append(out, l.Name)
		}
		if len(list) < per {
			break
		}
	}
	return out, nil
}

// Labels implements LabelReader: a merge request lists its label names
// (/projects/:id/merge_requests/:iid); pr is the merge request IID.
func (g *GitLab) Labels(ctx context.Context, pr int) ([]string, error) {
	if pr <= 0 {
		return nil, fmt.Errorf("labels: merge request IID %d must be positive", pr)
	}
	b, err := g.do(ctx, http.MethodGet, g.projectPath()+"/merge_requests/"+strconv.Itoa(pr), nil, "read merge request")
	if err != nil {
		return nil, err
	}
	var mr struct {
		Labels []string `json:"labels"`
	}
	if err := json.Unmarshal(b, &mr); err != nil {
		return nil, &Error{Op: "read merge request", Err: fmt.Errorf("decode: %w", err)}
	}
	return mr.Labels, nil
}

var (
	_ LabelReader = (*GitHub)(nil)
	_ LabelReader = (*GitLab)(nil)
)
