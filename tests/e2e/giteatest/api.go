package giteatest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// APIError is a non-2xx answer of Gitea's REST API.
type APIError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("gitea %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Body)
}

// Do calls Gitea's REST API at /api/v1+path as the admin: in (if not nil)
// is sent as JSON, a 2xx answer is decoded into out (if not nil).
func (i *Instance) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, i.URL+"/api/v1"+path, body)
	if err != nil {
		return fmt.Errorf("gitea request %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "token "+i.Token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := i.hc.Do(req)
	if err != nil {
		return fmt.Errorf("gitea %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("gitea %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Body: strings.TrimSpace(string(rb))}
	}
	if out != nil && len(rb) > 0 {
		if err := json.Unmarshal(rb, out); err != nil {
			return fmt.Errorf("gitea %s %s: decode answer: %w\n%s", method, path, err, rb)
		}
	}
	return nil
}

func (i *Instance) must(t testing.TB, method, path string, in, out any) {
	t.Helper()
	if err := i.Do(t.Context(), method, path, in, out); err != nil {
		t.Fatal(err)
	}
}

// Repo is a repository of the instance.
type Repo struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	FullName string `json:"full_name"`
	CloneURL string `json:"clone_url"`
	HTMLURL  string `json:"html_url"`
	Owner    struct {
		Login string `json:"login"`
	} `json:"owner"`
	DefaultBranch string `json:"default_branch"`

	// AuthURL is CloneURL with the admin token as credentials, for git.
	AuthURL string `json:"-"`
}

func (r Repo) path() string { return "/repos/" + r.Owner.Login + "/" + r.Name }

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// CreateRepo creates an empty repository (default branch main) named after
// the test, owned by the admin. It prints Gitea's log if the test fails.
func (i *Instance) CreateRepo(t testing.TB) Repo {
	t.Helper()
	i.seq.Lock()
	i.n++
	n := i.n
	i.seq.Unlock()
	name := strings.Trim(unsafeName.ReplaceAllString(t.Name(), "-"), "-.")
	if len(name) > 60 {
		name = name[:60]
	}
	name = fmt.Sprintf("%s-%d", name, n)
	var r Repo
	i.must(t, http.MethodPost, "/user/repos", map[string]any{
		"name": name, "default_branch": "main", "private": false, "auto_init": false,
	}, &r)
	u, err := url.Parse(r.CloneURL)
	if err != nil {
		t.Fatalf("clone URL %q: %v", r.CloneURL, err)
	}
	u.User = url.UserPassword(AdminUser, i.Token)
	r.AuthURL = u.String()
	i.LogOnFailure(t)
	return r
}

// Hook is a repository webhook.
type Hook struct {
	ID     int64             `json:"id"`
	Type   string            `json:"type"`
	Active bool              `json:"active"`
	Events []string          `json:"events"`
	Config map[string]string `json:"config"`
}

// CreateHook registers a Gitea-type webhook (JSON body, signed with
// secret) that fires for events (default: push and pull_request).
func (i *Instance) CreateHook(t testing.TB, r Repo, target, secret string, events ...string) Hook {
	t.Helper()
	if len(events) == 0 {
		events = []string{"push", "pull_request"}
	}
	var h Hook
	i.must(t, http.MethodPost, r.path()+"/hooks", map[string]any{
		"type":   "gitea",
		"active": true,
		"events": events,
		"config": map[string]string{"url": target, "content_type": "json", "secret": secret},
	}, &h)
	return h
}

// TestHook makes Gitea send a signed push delivery for the default
// branch's head to the hook, without a push.
func (i *Instance) TestHook(t testing.TB, r Repo, id int64) {
	t.Helper()
	i.must(t, http.MethodPost, fmt.Sprintf("%s/hooks/%d/tests", r.path(), id), nil, nil)
}

// Status is a commit status.
type Status struct {
	ID          int64  `json:"id"`
	State       string `json:"status"`
	Context     string `json:"context"`
	Description string `json:"description"`
	TargetURL   string `json:"target_url"`
	Created     string `json:"created_at"`
}

// CreateStatus posts a commit status as the admin.
func (i *Instance) CreateStatus(t testing.TB, r Repo, sha string, s Status) {
	t.Helper()
	i.must(t, http.MethodPost, r.path()+"/statuses/"+sha, map[string]string{
		"state": s.State, "context": s.Context, "description": s.Description, "target_url": s.TargetURL,
	}, nil)
}

// Statuses reads every status of a commit through
// GET /repos/{o}/{r}/commits/{sha}/statuses, oldest first.
func (i *Instance) Statuses(ctx context.Context, r Repo, sha string) ([]Status, error) {
	var all []Status
	for page := 1; ; page++ {
		var batch []Status
		if err := i.Do(ctx, http.MethodGet, fmt.Sprintf("%s/commits/%s/statuses?sort=oldest&limit=50&page=%d", r.path(), sha, page), nil, &batch); err != nil {
			return nil, err
		}
		all = append(all, batch...)
		if len(batch) < 50 {
			break
		}
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].ID < all[b].ID })
	return all, nil
}

// Latest returns the newest status per context.
func Latest(all []Status) map[string]Status {
	m := map[string]Status{}
	for _, s := range all {
		if prev, ok := m[s.Context]; !ok || s.ID > prev.ID {
			m[s.Context] = s
		}
	}
	return m
}

// FormatStatuses renders statuses one per line, for failure messages.
func FormatStatuses(all []Status) string {
	if len(all) == 0 {
		return "(no statuses)"
	}
	var b strings.Builder
	for _, s := range all {
		fmt.Fprintf(&b, "#%d %s = %s: %q %s\n", s.ID, s.Context, s.State, s.Description, s.TargetURL)
	}
	return b.String()
}

// PullRequest is a pull request.
type PullRequest struct {
	Number int64  `json:"number"`
	State  string `json:"state"`
	Merged bool   `json:"merged"`
	Head   struct {
		Ref string `json:"ref"`
		SHA string `json:"sha"`
	} `json:"head"`
	Base struct {
		Ref string `json:"ref"`
	} `json:"base"`
	MergeCommitSHA string `json:"merge_commit_sha"`
	Mergeable      bool   `json:"mergeable"`
}

// OpenPullRequest opens a pull request of branch head into base. Gitea
// marks a repository non-empty only after it processed the first push in
// the background, and refuses pull requests until then: wait for that.
func (i *Instance) OpenPullRequest(t testing.TB, r Repo, head, base, title string) PullRequest {
	t.Helper()
	var last error
	if !poll(t.Context(), func() bool {
		var cur struct {
			Empty bool `json:"empty"`
		}
		last = i.Do(t.Context(), http.MethodGet, r.path(), nil, &cur)
		if last == nil && cur.Empty {
			last = fmt.Errorf("repository %s is still empty", r.FullName)
		}
		return last == nil
	}) {
		t.Fatalf("open pull request: %v", last)
	}
	var pr PullRequest
	i.must(t, http.MethodPost, r.path()+"/pulls", map[string]string{
		"head": head, "base": base, "title": title,
	}, &pr)
	return pr
}

// PullRequest reads a pull request.
func (i *Instance) PullRequest(ctx context.Context, r Repo, number int64) (PullRequest, error) {
	var pr PullRequest
	err := i.Do(ctx, http.MethodGet, fmt.Sprintf("%s/pulls/%d", r.path(), number), nil, &pr)
	return pr, err
}

// MergePullRequest merges a pull request with a merge commit and returns
// the merged pull request (MergeCommitSHA is the new head of its base).
// Gitea checks mergeability in the background after the PR is opened, so
// a "not mergeable yet" answer is retried until ctx ends.
func (i *Instance) MergePullRequest(t testing.TB, r Repo, number int64) PullRequest {
	t.Helper()
	path := fmt.Sprintf("%s/pulls/%d/merge", r.path(), number)
	var last error
	if !poll(t.Context(), func() bool {
		last = i.Do(t.Context(), http.MethodPost, path, map[string]any{"Do": "merge"}, nil)
		if ae, ok := last.(*APIError); ok && (ae.Status == http.StatusMethodNotAllowed || ae.Status == http.StatusConflict) {
			return false
		}
		return true
	}) || last != nil {
		t.Fatalf("merge pull request #%d: %v", number, last)
	}
	pr, err := i.PullRequest(t.Context(), r, number)
	if err != nil {
		t.Fatal(err)
	}
	if !pr.Merged || pr.MergeCommitSHA == "" {
		t.Fatalf("pull request #%d not merged after merge: %+v", number, pr)
	}
	return pr
}

// BranchHead returns the commit a branch points at.
func (i *Instance) BranchHead(ctx context.Context, r Repo, branch string) (string, error) {
	var b struct {
		Commit struct {
			ID string `json:"id"`
		} `json:"commit"`
	}
	if err := i.Do(ctx, http.MethodGet, r.path()+"/branches/"+url.PathEscape(branch), nil, &b); err != nil {
		return "", err
	}
	return b.Commit.ID, nil
}

// Comment is one comment of an issue or pull request.
type Comment struct {
	ID   int64  `json:"id"`
	Body string `json:"body"`
}

// Comments reads every comment of issue or pull request number through
// GET /repos/{o}/{r}/issues/{n}/comments, oldest first.
func (i *Instance) Comments(ctx context.Context, r Repo, number int64) ([]Comment, error) {
	var all []Comment
	if err := i.Do(ctx, http.MethodGet, fmt.Sprintf("%s/issues/%d/comments", r.path(), number), nil, &all); err != nil {
		return nil, err
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].ID < all[b].ID })
	return all, nil
}

// ClosePullRequest closes a pull request without merging it.
func (i *Instance) ClosePullRequest(t testing.TB, r Repo, number int64) {
	t.Helper()
	i.must(t, http.MethodPatch, fmt.Sprintf("%s/pulls/%d", r.path(), number), map[string]string{"state": "closed"}, nil)
}

// AddLabel puts the label name on issue or pull request number, creating
// the repository's label first when it has none of that name. Gitea then
// delivers a pull_request event with action label_updated.
func (i *Instance) AddLabel(t testing.TB, r Repo, number int64, name string) {
	t.Helper()
	var labels []struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	i.must(t, http.MethodGet, r.path()+"/labels?limit=50", nil, &labels)
	id := int64(0)
	for _, l := range labels {
		if l.Name == name {
			id = l.ID
		}
	}
	if id == 0 {
		var l struct {
			ID int64 `json:"id"`
		}
		i.must(t, http.MethodPost, r.path()+"/labels", map[string]string{"name": name, "color": "#e11d21"}, &l)
		id = l.ID
	}
	i.must(t, http.MethodPost, fmt.Sprintf("%s/issues/%d/labels", r.path(), number), map[string]any{"labels": []int64{id}}, nil)
}
