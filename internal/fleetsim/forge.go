package fleetsim

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// statusSink is a loopback forge speaking Gitea's commit-status API: it
// takes POST /api/v1/repos/{owner}/{repo}/statuses/{sha}, lists a commit's
// statuses newest first (GET …/commits/{sha}/statuses) and counts what it
// was sent, so the simulator can check that every commit got exactly one
// final nkudo/apply.
type statusSink struct {
	srv *http.Server
	ln  net.Listener

	mu    sync.Mutex
	posts int
	// byCommit holds each commit's statuses, oldest first.
	byCommit map[string][]sinkStatus
}

type sinkStatus struct {
	State       string `json:"state"`
	TargetURL   string `json:"target_url,omitempty"`
	Description string `json:"description,omitempty"`
	Context     string `json:"context"`
}

func startStatusSink() (*statusSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &statusSink{ln: ln, byCommit: map[string][]sinkStatus{}}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve)}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *statusSink) URL() string { return "http://" + s.ln.Addr().String() }

func (s *statusSink) Close() error { return s.srv.Close() }

func (s *statusSink) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/api/v1/repos/") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodGet {
		rest, ok := strings.CutSuffix(r.URL.Path, "/statuses")
		_, sha, ok2 := strings.Cut(rest, "/commits/")
		if !ok || !ok2 {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		list := slices.Clone(s.byCommit[sha])
		s.mu.Unlock()
		slices.Reverse(list)
		json.NewEncoder(w).Encode(list)
		return
	}
	_, sha, ok := strings.Cut(r.URL.Path, "/statuses/")
	if !ok || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	var st sinkStatus
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&st); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.posts++
	s.byCommit[sha] = append(s.byCommit[sha], st)
	s.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(st)
}

// state is the newest state of context on sha ("" when none).
func (s *statusSink) state(sha, context string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.byCommit[sha]
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].Context == context {
			return list[i].State
		}
	}
	return ""
}

// finals counts the statuses of context on sha in a final state (not pending).
func (s *statusSink) finals(sha, context string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, st := range s.byCommit[sha] {
		if st.Context == context && st.State != "pending" {
			n++
		}
	}
	return n
}

// total is the number of statuses posted.
func (s *statusSink) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.posts
}

// failed returns the first status of sha in a failure or error state, as
// "context=state: description" ("" when none).
func (s *statusSink) failed(sha string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.byCommit[sha] {
		if st.State == "failure" || st.State == "error" {
			return fmt.Sprintf("%s=%s: %s", st.Context, st.State, st.Description)
		}
	}
	return ""
}
