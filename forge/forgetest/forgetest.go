// Package forgetest is a fake forge for tests: a real HTTP server speaking
// the commit-status APIs of GitHub (/repos/…), Gitea/Forgejo
// (/api/v1/repos/…) and GitLab (/api/v4/projects/…, with GitLab's state
// machine that rejects a repeated state with 400). Outages are scriptable.
package forgetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// Status is one status as the fake stored it (forge-native state names).
type Status struct {
	SHA         string `json:"-"`
	State       string `json:"state"`
	Context     string `json:"context,omitempty"`
	Name        string `json:"name,omitempty"`
	Description string `json:"description"`
	TargetURL   string `json:"target_url"`
	Ref         string `json:"ref,omitempty"`
}

// Label is the status's context (GitHub/Gitea) or name (GitLab).
func (s Status) Label() string {
	if s.Context != "" {
		return s.Context
	}
	return s.Name
}

// Server is a fake forge. The zero value is not usable; call New.
type Server struct {
	*httptest.Server
	// Token, when set, is required (Authorization: Bearer/token X, or PRIVATE-TOKEN).
	Token string

	mu       sync.Mutex
	statuses map[string][]Status // sha → oldest first
	posts    int
	reads    int
	down     bool
	failNext int

	comments      map[string][]Comment // issue number → oldest first
	commentID     int64
	commentWrites int

	labels     map[string][]string // pull request number → its label names
	labelReads int
}

// Comment is one pull request comment as the fake stored it.
type Comment struct {
	ID   int64  `json:"id"`
	Body string `json:"body"`
}

// New starts a fake forge, closed when the test ends.
func New(t testing.TB) *Server {
	s := &Server{statuses: map[string][]Status{}, comments: map[string][]Comment{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// NewTLS starts a fake forge that speaks HTTPS; use its Client().
func NewTLS(t testing.TB) *Server {
	s := &Server{statuses: map[string][]Status{}, comments: map[string][]Comment{}}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// AddComment stores a comment on issue (pull request) number n as someone
// else would, and returns its id.
func (s *Server) AddComment(n int, body string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commentID++
	k := fmt.Sprint(n)
	s.comments[k] = append(s.comments[k], Comment{ID: s.commentID, Body: body})
	return s.commentID
}

// SetLabels gives pull request (merge request) n these labels. A pull
// request never given labels (nor comments) is unknown: its labels answer
// 404, as the real forges do.
func (s *Server) SetLabels(n int, labels ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.labels == nil {
		s.labels = map[string][]string{}
	}
	s.labels[fmt.Sprint(n)] = append([]string{}, labels...)
}

// LabelReads is how many label reads were answered.
func (s *Server) LabelReads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.labelReads
}

// prLabels returns the labels of pull request n, false when it is unknown.
func (s *Server) prLabels(n string) ([]string, bool) {
	l, ok := s.labels[n]
	if !ok {
		_, ok = s.comments[n]
	}
	return l, ok
}

// githubLabels serves repos/{o}/{r}/issues/{n}/labels (GET), paginated by
// GitHub's per_page (at most 100) or Gitea's limit (at most 50).
func (s *Server) githubLabels(w http.ResponseWriter, r *http.Request, p []string, gitea bool) bool {
	if len(p) != 6 || p[0] != "repos" || p[3] != "issues" || p[5] != "labels" || r.Method != http.MethodGet {
		return false
	}
	l, ok := s.prLabels(p[4])
	if !ok {
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
		return true
	}
	q := r.URL.Query()
	per, most, key := 30, 100, "per_page"
	if gitea {
		most, key = 50, "limit"
	}
	if v := q.Get(key); v != "" {
		fmt.Sscan(v, &per)
	}
	per = min(max(per, 1), most)
	page := 1
	if v := q.Get("page"); v != "" {
		fmt.Sscan(v, &page)
	}
	type label struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	out := []label{}
	for i := min((page-1)*per, len(l)); i < min(page*per, len(l)); i++ {
		out = append(out, label{ID: i + 1, Name: l[i]})
	}
	s.labelReads++
	json.NewEncoder(w).Encode(out)
	return true
}

// Comments returns the comments of pull request n, oldest first.
func (s *Server) Comments(n int) []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Comment(nil), s.comments[fmt.Sprint(n)]...)
}

// CommentWrites is how many comment creates and edits were accepted.
func (s *Server) CommentWrites() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commentWrites
}

// gitlabNotes serves projects/:id/merge_requests/:iid/notes (GET newest
// first, paginated by per_page; POST) and .../notes/:note_id (PUT), with
// GitLab's 1,000,000-character limit. Comments added with AddComment are
// the merge request's notes; every merge request also has one system note.
func (s *Server) gitlabNotes(w http.ResponseWriter, r *http.Request, p []string) bool {
	if len(p) < 5 || p[2] != "merge_requests" || p[4] != "notes" {
		return false
	}
	type note struct {
		ID     int64  `json:"id"`
		Body   string `json:"body"`
		System bool   `json:"system"`
	}
	decode := func() (string, bool) {
		var in struct {
			Body string `json:"body"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Body == "" {
			http.Error(w, `{"message":"400 Bad request - body is missing"}`, http.StatusBadRequest)
			return "", false
		}
		if len([]rune(in.Body)) > 1000000 {
			http.Error(w, `{"message":{"note":["is too long (maximum is 1000000 characters)"]}}`, http.StatusBadRequest)
			return "", false
		}
		return in.Body, true
	}
	iid := p[3]
	switch {
	case len(p) == 5 && r.Method == http.MethodGet:
		per, page := 20, 1
		if v := r.URL.Query().Get("per_page"); v != "" {
			fmt.Sscan(v, &per)
		}
		if v := r.URL.Query().Get("page"); v != "" {
			fmt.Sscan(v, &page)
		}
		l := s.comments[iid]
		all := []note{{ID: -1, Body: "added 1 commit", System: true}}
		for i := len(l) - 1; i >= 0; i-- {
			all = append(all, note{ID: l[i].ID, Body: l[i].Body})
		}
		lo, hi := min((page-1)*per, len(all)), min(page*per, len(all))
		json.NewEncoder(w).Encode(all[lo:hi])
	case len(p) == 5 && r.Method == http.MethodPost:
		body, ok := decode()
		if !ok {
			return true
		}
		s.commentID++
		c := Comment{ID: s.commentID, Body: body}
		s.comments[iid] = append(s.comments[iid], c)
		s.commentWrites++
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(note{ID: c.ID, Body: c.Body})
	case len(p) == 6 && r.Method == http.MethodPut:
		body, ok := decode()
		if !ok {
			return true
		}
		l := s.comments[iid]
		for i := range l {
			if fmt.Sprint(l[i].ID) == p[5] {
				l[i].Body = body
				s.commentWrites++
				json.NewEncoder(w).Encode(note{ID: l[i].ID, Body: body})
				return true
			}
		}
		http.Error(w, `{"message":"404 Not found"}`, http.StatusNotFound)
	default:
		http.Error(w, `{"message":"405 Method Not Allowed"}`, http.StatusMethodNotAllowed)
	}
	return true
}

// githubComments serves repos/{o}/{r}/issues/{n}/comments (GET paginated
// with per_page or Gitea's limit, and POST) and
// repos/{o}/{r}/issues/comments/{id} (PATCH). GitHub rejects bodies over
// 65,536 characters with 422.
func (s *Server) githubComments(w http.ResponseWriter, r *http.Request, p []string, gitea bool) bool {
	if len(p) < 5 || p[0] != "repos" || p[3] != "issues" {
		return false
	}
	decode := func() (string, bool) {
		var in struct {
			Body string `json:"body"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Body == "" {
			http.Error(w, `{"message":"Validation Failed: body"}`, http.StatusUnprocessableEntity)
			return "", false
		}
		if !gitea && len([]rune(in.Body)) > 65536 {
			http.Error(w, `{"message":"Validation Failed","errors":[{"message":"body is too long (maximum is 65536 characters)"}]}`, http.StatusUnprocessableEntity)
			return "", false
		}
		return in.Body, true
	}
	switch {
	case len(p) == 6 && p[5] == "comments" && r.Method == http.MethodGet:
		q := r.URL.Query()
		per := 30
		if v := q.Get("per_page"); v != "" && !gitea {
			fmt.Sscan(v, &per)
		}
		if v := q.Get("limit"); v != "" && gitea {
			fmt.Sscan(v, &per)
		}
		page := 1
		if v := q.Get("page"); v != "" {
			fmt.Sscan(v, &page)
		}
		l := s.comments[p[4]]
		lo, hi := min((page-1)*per, len(l)), min(page*per, len(l))
		out := append([]Comment{}, l[lo:hi]...)
		json.NewEncoder(w).Encode(out)
	case len(p) == 6 && p[5] == "comments" && r.Method == http.MethodPost:
		body, ok := decode()
		if !ok {
			return true
		}
		s.commentID++
		c := Comment{ID: s.commentID, Body: body}
		s.comments[p[4]] = append(s.comments[p[4]], c)
		s.commentWrites++
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(c)
	case len(p) == 6 && p[4] == "comments" && r.Method == http.MethodPatch:
		body, ok := decode()
		if !ok {
			return true
		}
		for k, l := range s.comments {
			for i := range l {
				if fmt.Sprint(l[i].ID) == p[5] {
					l[i].Body = body
					s.comments[k] = l
					s.commentWrites++
					json.NewEncoder(w).Encode(l[i])
					return true
				}
			}
		}
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
	default:
		return false
	}
	return true
}

// SetDown makes every request answer 503 (true) or work again (false).
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// FailNext makes the next n requests answer 502.
func (s *Server) FailNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = n
}

// Posts is how many status writes were accepted.
func (s *Server) Posts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.posts
}

// Statuses returns every status posted for sha, oldest first.
func (s *Server) Statuses(sha string) []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Status(nil), s.statuses[sha]...)
}

// Latest returns the newest status for sha and label, and whether there is one.
func (s *Server) Latest(sha, label string) (Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.statuses[sha]
	for i := len(l) - 1; i >= 0; i-- {
		if strings.EqualFold(l[i].Label(), label) {
			return l[i], true
		}
	}
	return Status{}, false
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		http.Error(w, `{"message":"forge is down"}`, http.StatusServiceUnavailable)
		return
	}
	if s.failNext > 0 {
		s.failNext--
		http.Error(w, `{"message":"bad gateway"}`, http.StatusBadGateway)
		return
	}
	if s.Token != "" {
		auth := r.Header.Get("Authorization")
		if auth != "Bearer "+s.Token && auth != "token "+s.Token && r.Header.Get("PRIVATE-TOKEN") != s.Token {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return
		}
	}
	path := r.URL.EscapedPath()
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 3 && parts[0] == "api" && parts[1] == "v4":
		s.gitlab(w, r, parts[2:])
	case len(parts) >= 3 && parts[0] == "api" && parts[1] == "v1":
		s.github(w, r, parts[2:], true)
	default:
		s.github(w, r, parts, false)
	}
}

var githubStates = map[string]bool{"pending": true, "success": true, "failure": true, "error": true}
var giteaStates = map[string]bool{"pending": true, "success": true, "failure": true, "error": true, "warning": true}

// github serves repos/{o}/{r}/statuses/{sha} (POST) and
// repos/{o}/{r}/commits/{sha}/statuses (GET).
func (s *Server) github(w http.ResponseWriter, r *http.Request, p []string, gitea bool) {
	if s.githubComments(w, r, p, gitea) || s.githubLabels(w, r, p, gitea) {
		return
	}
	switch {
	case r.Method == http.MethodPost && len(p) == 5 && p[0] == "repos" && p[3] == "statuses":
		var st Status
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
			http.Error(w, `{"message":"Problems parsing JSON"}`, http.StatusBadRequest)
			return
		}
		states := githubStates
		if gitea {
			states = giteaStates
		}
		if !states[st.State] {
			http.Error(w, `{"message":"Validation Failed: state"}`, http.StatusUnprocessableEntity)
			return
		}
		if !gitea && len([]rune(st.Description)) > 140 {
			http.Error(w, `{"message":"Validation Failed","errors":[{"message":"description is too long (maximum is 140 characters)"}]}`, http.StatusUnprocessableEntity)
			return
		}
		if st.Context == "" {
			st.Context = "default"
		}
		st.SHA = p[4]
		s.statuses[st.SHA] = append(s.statuses[st.SHA], st)
		s.posts++
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(st)
	case r.Method == http.MethodGet && len(p) == 6 && p[0] == "repos" && p[3] == "commits" && p[5] == "statuses":
		s.reads++
		l := s.statuses[p[4]]
		out := make([]Status, 0, len(l))
		for i := len(l) - 1; i >= 0; i-- { // newest first
			out = append(out, l[i])
		}
		json.NewEncoder(w).Encode(out)
	default:
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
	}
}

// gitlab serves projects/:id/statuses/:sha (POST, form or JSON) and
// projects/:id/repository/commits/:sha/statuses (GET, latest per name).
func (s *Server) gitlab(w http.ResponseWriter, r *http.Request, p []string) {
	if len(p) < 2 || p[0] != "projects" {
		http.Error(w, `{"message":"404 Not Found"}`, http.StatusNotFound)
		return
	}
	if _, err := url.PathUnescape(p[1]); err != nil {
		http.Error(w, `{"message":"404 Project Not Found"}`, http.StatusNotFound)
		return
	}
	if s.gitlabNotes(w, r, p) {
		return
	}
	if r.Method == http.MethodGet && len(p) == 4 && p[2] == "merge_requests" {
		// A merge request lists its label names as strings.
		l, ok := s.prLabels(p[3])
		if !ok {
			http.Error(w, `{"message":"404 Not found"}`, http.StatusNotFound)
			return
		}
		s.labelReads++
		json.NewEncoder(w).Encode(map[string]any{"iid": p[3], "state": "opened", "labels": append([]string{}, l...)})
		return
	}
	switch {
	case r.Method == http.MethodPost && len(p) == 4 && p[2] == "statuses":
		var st Status
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
			http.Error(w, `{"message":"400 Bad request"}`, http.StatusBadRequest)
			return
		}
		if st.Name == "" {
			st.Name = "default"
		}
		st.SHA = p[3]
		prev := ""
		for _, o := range s.statuses[st.SHA] {
			if o.Name == st.Name {
				prev = o.State
			}
		}
		if err := gitlabTransition(prev, st.State); err != "" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"message":%q}`, err)
			return
		}
		s.statuses[st.SHA] = append(s.statuses[st.SHA], st)
		s.posts++
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(st)
	case r.Method == http.MethodGet && len(p) == 6 && p[2] == "repository" && p[3] == "commits" && p[5] == "statuses":
		s.reads++
		l := s.statuses[p[4]]
		seen := map[string]bool{}
		var out []Status
		for i := len(l) - 1; i >= 0; i-- {
			if !seen[l[i].Name] {
				seen[l[i].Name] = true
				out = append(out, l[i])
			}
		}
		json.NewEncoder(w).Encode(out)
	default:
		http.Error(w, `{"message":"404 Not Found"}`, http.StatusNotFound)
	}
}

// gitlabTransition is GitLab's commit-status state machine: the same
// state twice is refused, a finished status starts over.
func gitlabTransition(from, to string) string {
	valid := map[string]bool{"pending": true, "running": true, "success": true, "failed": true, "canceled": true}
	if !valid[to] {
		return "state does not have a valid value"
	}
	if from == "" {
		return ""
	}
	finished := from == "success" || from == "failed" || from == "canceled"
	if from == to && !finished {
		return fmt.Sprintf("Cannot transition status via :%s from :%s", gitlabEvent(to), from)
	}
	if from == to {
		// GitLab answers this one too: a finished status cannot be finished again.
		return fmt.Sprintf("Cannot transition status via :%s from :%s", gitlabEvent(to), from)
	}
	return ""
}

func gitlabEvent(state string) string {
	switch state {
	case "pending":
		return "enqueue"
	case "running":
		return "run"
	case "success":
		return "succeed"
	case "failed":
		return "drop"
	}
	return "cancel"
}
