package forge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// GitHubOptions configures a GitHub or Gitea/Forgejo status writer.
type GitHubOptions struct {
	// BaseURL is the API root: "https://api.github.com" for github.com,
	// "https://ghe.example.com/api/v3" for GitHub Enterprise, and the
	// forge root ("https://gitea.example.com") for Gitea/Forgejo (the writer
	// adds /api/v1). Empty means api.github.com for GitHub.
	BaseURL string
	Owner   string
	Repo    string
	Token   Token
	// Client is the HTTP client; nil means one with a 30s timeout.
	Client *http.Client
}

// GitHub posts statuses with POST /repos/{owner}/{repo}/statuses/{sha}.
type GitHub struct {
	opts  GitHubOptions
	base  string
	gitea bool
}

// NewGitHub returns a writer for GitHub (and GitHub Enterprise).
func NewGitHub(o GitHubOptions) (*GitHub, error) {
	if o.BaseURL == "" {
		o.BaseURL = "https://api.github.com"
	}
	return newGitHubish(o, false)
}

// NewGitea returns a writer for Gitea or Forgejo: the GitHub API shape under /api/v1.
func NewGitea(o GitHubOptions) (*GitHub, error) {
	if o.BaseURL == "" {
		return nil, fmt.Errorf("gitea writer: base URL is required")
	}
	return newGitHubish(o, true)
}

func newGitHubish(o GitHubOptions, gitea bool) (*GitHub, error) {
	if o.Owner == "" || o.Repo == "" {
		return nil, fmt.Errorf("status writer: owner and repo are required")
	}
	u, err := url.Parse(o.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("status writer: base URL %q: must be http(s)", SanitizeURL(o.BaseURL))
	}
	base := strings.TrimRight(o.BaseURL, "/")
	if gitea && !strings.HasSuffix(base, "/api/v1") {
		base += "/api/v1"
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 30 * time.Second}
	}
	return &GitHub{opts: o, base: base, gitea: gitea}, nil
}

// Name implements Writer.
func (g *GitHub) Name() string {
	if g.gitea {
		return "gitea"
	}
	return "github"
}

// DescriptionLimit implements Writer: GitHub answers 422 above 140
// characters; Gitea stores TEXT but 140 keeps the UI readable.
func (g *GitHub) DescriptionLimit() int { return 140 }

func (g *GitHub) repoPath() string {
	return "/repos/" + url.PathEscape(g.opts.Owner) + "/" + url.PathEscape(g.opts.Repo)
}

type ghStatus struct {
	State       string `json:"state"`
	TargetURL   string `json:"target_url,omitempty"`
	Description string `json:"description,omitempty"`
	Context     string `json:"context"`
}

// Post implements Writer.
func (g *GitHub) Post(ctx context.Context, st Status) error {
	body, err := json.Marshal(ghStatus{State: string(st.State), TargetURL: st.TargetURL, Description: st.Description, Context: st.Context})
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	_, err = g.do(ctx, http.MethodPost, g.repoPath()+"/statuses/"+url.PathEscape(st.SHA), body, "post status")
	return err
}

// Current implements Writer. Both forges list newest first; the first
// status seen per context (case-insensitively on GitHub) is the current one.
func (g *GitHub) Current(ctx context.Context, sha string) ([]Status, error) {
	var path string
	if g.gitea {
		path = g.repoPath() + "/commits/" + url.PathEscape(sha) + "/statuses?limit=50"
	} else {
		path = g.repoPath() + "/commits/" + url.PathEscape(sha) + "/statuses?per_page=100"
	}
	b, err := g.do(ctx, http.MethodGet, path, nil, "list statuses")
	if err != nil {
		return nil, err
	}
	var list []ghStatus
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, &Error{Op: "list statuses", Err: fmt.Errorf("decode: %w", err)}
	}
	seen := map[string]bool{}
	var out []Status
	for _, s := range list {
		k := strings.ToLower(s.Context)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, Status{SHA: sha, Context: s.Context, State: State(s.State), Description: s.Description, TargetURL: s.TargetURL})
	}
	return out, nil
}

func (g *GitHub) do(ctx context.Context, method, path string, body []byte, op string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !g.opts.Token.Empty() {
		if g.gitea {
			req.Header.Set("Authorization", "token "+g.opts.Token.Reveal())
		} else {
			req.Header.Set("Authorization", "Bearer "+g.opts.Token.Reveal())
			req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
		}
	}
	return doHTTP(g.opts.Client, req, op)
}

// doHTTP runs req and classifies the outcome. The error never carries the
// request headers (where the token lives) and the URL is sanitised.
func doHTTP(c *http.Client, req *http.Request, op string) ([]byte, error) {
	op = op + " " + SanitizeURL(req.URL.String())
	resp, err := c.Do(req)
	if err != nil {
		return nil, &Error{Op: op, Retry: req.Context().Err() == nil, Err: stripURLError(err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, &Error{Op: op, Status: resp.StatusCode, Retry: true, Err: err}
	}
	if resp.StatusCode/100 != 2 {
		return b, &Error{
			Op:     op,
			Status: resp.StatusCode,
			Body:   Trim(strings.TrimSpace(string(b)), 300),
			Retry:  resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout,
		}
	}
	return b, nil
}

// stripURLError drops the (possibly credential-carrying) URL from a
// *url.Error; the caller names the sanitised URL itself.
func stripURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
