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
}

// New starts a fake forge, closed when the test ends.
func New(t testing.TB) *Server {
	s := &Server{statuses: map[string][]Status{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
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
