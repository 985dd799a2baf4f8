package forge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// GitLabOptions configures a GitLab status writer.
type GitLabOptions struct {
	// BaseURL is the GitLab root, "https://gitlab.com" by default; the
	// writer adds /api/v4.
	BaseURL string
	// Project is the numeric project ID or the "group/project" path.
	Project string
	Token   Token
	// Client is the HTTP client; nil means one with a 30s timeout.
	Client *http.Client
}

// GitLab posts statuses with POST /api/v4/projects/:id/statuses/:sha.
// GitLab has its own state names (failed, running, canceled) and a state
// machine that rejects a repeated state with 400, so the Reporter's
// compare-first logic matters most here.
type GitLab struct {
	opts GitLabOptions
	base string
}

// NewGitLab returns a writer for GitLab.
func NewGitLab(o GitLabOptions) (*GitLab, error) {
	if o.BaseURL == "" {
		o.BaseURL = "https://gitlab.com"
	}
	if o.Project == "" {
		return nil, fmt.Errorf("gitlab writer: project is required")
	}
	u, err := url.Parse(o.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("gitlab writer: base URL %q: must be http(s)", SanitizeURL(o.BaseURL))
	}
	base := strings.TrimRight(o.BaseURL, "/")
	if !strings.HasSuffix(base, "/api/v4") {
		base += "/api/v4"
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 30 * time.Second}
	}
	return &GitLab{opts: o, base: base}, nil
}

// Name implements Writer.
func (g *GitLab) Name() string { return "gitlab" }

// DescriptionLimit implements Writer (GitLab's column is a varchar(255)).
func (g *GitLab) DescriptionLimit() int { return 255 }

// gitlabState maps a neutral state to GitLab's names.
func gitlabState(s State) string {
	switch s {
	case StateFailure, StateError:
		return "failed"
	}
	return string(s)
}

// neutralState maps GitLab's names back. running and created read as
// pending; canceled and skipped as error.
func neutralState(s string) State {
	switch s {
	case "failed":
		return StateFailure
	case "running", "created", "pending", "waiting_for_resource", "preparing", "scheduled", "manual":
		return StatePending
	case "success":
		return StateSuccess
	case "canceled", "skipped":
		return StateError
	}
	return State(s)
}

type glStatus struct {
	State       string `json:"state"`
	Name        string `json:"name"`
	Ref         string `json:"ref,omitempty"`
	TargetURL   string `json:"target_url,omitempty"`
	Description string `json:"description,omitempty"`
}

func (g *GitLab) projectPath() string {
	// Paths go in URL-encoded ("group%2Fproject").
	return "/projects/" + url.PathEscape(g.opts.Project)
}

// Post implements Writer. A 400 that says the status is already in that
// state is success: the forge shows what we wanted.
func (g *GitLab) Post(ctx context.Context, st Status) error {
	body, err := json.Marshal(glStatus{State: gitlabState(st.State), Name: st.Context, Ref: st.Ref, TargetURL: st.TargetURL, Description: st.Description})
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	_, err = g.do(ctx, http.MethodPost, g.projectPath()+"/statuses/"+url.PathEscape(st.SHA), body, "post status")
	var fe *Error
	if errors.As(err, &fe) && fe.Status == http.StatusBadRequest && strings.Contains(fe.Body, "Cannot transition status") {
		return nil
	}
	return err
}

// Current implements Writer. GitLab lists the latest status per name
// unless all=true.
func (g *GitLab) Current(ctx context.Context, sha string) ([]Status, error) {
	b, err := g.do(ctx, http.MethodGet, g.projectPath()+"/repository/commits/"+url.PathEscape(sha)+"/statuses?per_page=100", nil, "list statuses")
	if err != nil {
		return nil, err
	}
	var list []glStatus
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, &Error{Op: "list statuses", Err: fmt.Errorf("decode: %w", err)}
	}
	seen := map[string]bool{}
	var out []Status
	for _, s := range list {
		if seen[s.Name] {
			continue
		}
		seen[s.Name] = true
		out = append(out, Status{SHA: sha, Context: s.Name, State: neutralState(s.State), Description: s.Description, TargetURL: s.TargetURL, Ref: s.Ref})
	}
	return out, nil
}

func (g *GitLab) do(ctx context.Context, method, path string, body []byte, op string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !g.opts.Token.Empty() {
		req.Header.Set("PRIVATE-TOKEN", g.opts.Token.Reveal())
	}
	return doHTTP(g.opts.Client, req, op)
}
