package forge_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/forge/forgetest"
)

func commenterCases() []struct {
	name string
	new  func(t *testing.T, srv *forgetest.Server) forge.Commenter
} {
	mk := func(gitea bool) func(t *testing.T, srv *forgetest.Server) forge.Commenter {
		return func(t *testing.T, srv *forgetest.Server) forge.Commenter {
			o := forge.GitHubOptions{BaseURL: srv.URL, Owner: "acme", Repo: "fleet", Token: forge.NewToken(srv.Token), Client: srv.Client()}
			var w *forge.GitHub
			var err error
			if gitea {
				w, err = forge.NewGitea(o)
			} else {
				w, err = forge.NewGitHub(o)
			}
			if err != nil {
				t.Fatal(err)
			}
			return w
		}
	}
	gitlab := func(t *testing.T, srv *forgetest.Server) forge.Commenter {
		w, err := forge.NewGitLab(forge.GitLabOptions{BaseURL: srv.URL, Project: "acme/fleet", Token: forge.NewToken(srv.Token), Client: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	return []struct {
		name string
		new  func(t *testing.T, srv *forgetest.Server) forge.Commenter
	}{{"github", mk(false)}, {"gitea", mk(true)}, {"gitlab", gitlab}}
}

// TestCommenterUpsert: the first write creates the comment, later writes
// edit that same one (found by its marker past a page of other comments),
// an unchanged body writes nothing, and a second control plane's marker
// keeps its own comment.
func TestCommenterUpsert(t *testing.T) {
	for _, tc := range commenterCases() {
		t.Run(tc.name, func(t *testing.T) {
			srv := forgetest.NewTLS(t)
			srv.Token = "forge-token"
			c := tc.new(t, srv)
			for i := range 120 { // more than one page on both forges
				srv.AddComment(7, "looks good "+strings.Repeat("!", i%3))
			}
			a, b := forge.PlanMarker(""), forge.PlanMarker("acme/")
			if err := c.Upsert(t.Context(), 7, a, "plan one", true); err != nil {
				t.Fatal(err)
			}
			if err := c.Upsert(t.Context(), 7, a, "plan two", true); err != nil {
				t.Fatal(err)
			}
			if err := c.Upsert(t.Context(), 7, a, "plan two", true); err != nil {
				t.Fatal(err)
			}
			if err := c.Upsert(t.Context(), 7, b, "other plane", true); err != nil {
				t.Fatal(err)
			}
			var ours []forgetest.Comment
			for _, cm := range srv.Comments(7) {
				if strings.HasPrefix(cm.Body, "<!-- nkudo:plan") {
					ours = append(ours, cm)
				}
			}
			if len(ours) != 2 {
				t.Fatalf("%d marked comments, want 2: %+v", len(ours), ours)
			}
			if ours[0].Body != a+"\nplan two" || ours[1].Body != b+"\nother plane" {
				t.Errorf("comments = %q, %q", ours[0].Body, ours[1].Body)
			}
			// create, edit, (no write for the same body), create
			if n := srv.CommentWrites(); n != 3 {
				t.Errorf("%d comment writes, want 3", n)
			}
			// An edit-only write edits ours and creates none elsewhere.
			if err := c.Upsert(t.Context(), 7, a, "closed", false); err != nil {
				t.Fatal(err)
			}
			if err := c.Upsert(t.Context(), 8, a, "closed", false); err != nil {
				t.Fatal(err)
			}
			if got := srv.Comments(8); len(got) != 0 {
				t.Errorf("an edit-only write created %+v", got)
			}
			if n := srv.CommentWrites(); n != 4 {
				t.Errorf("%d comment writes after the edit, want 4", n)
			}
		})
	}
}

// TestCommenterErrors: a body over GitHub's limit is a non-retryable
// error; a 502 is retryable; a bad pull request number names it.
func TestCommenterErrors(t *testing.T) {
	srv := forgetest.NewTLS(t)
	c := commenterCases()[0].new(t, srv)
	err := c.Upsert(t.Context(), 3, forge.PlanMarker(""), strings.Repeat("x", forge.CommentLimit+1), true)
	if err == nil || forge.Retryable(err) {
		t.Errorf("oversized body: err %v, retryable %v; want a final error", err, forge.Retryable(err))
	}
	srv.FailNext(1)
	if err := c.Upsert(t.Context(), 3, forge.PlanMarker(""), "x", true); err == nil || !forge.Retryable(err) {
		t.Errorf("502: err %v, want retryable", err)
	}
	if err := c.Upsert(t.Context(), 0, forge.PlanMarker(""), "x", true); err == nil || !strings.Contains(err.Error(), "pull request number") {
		t.Errorf("pr 0: err %v", err)
	}
}

// TestCommentReporterRetries: a body reported during an outage is written
// once the forge is back, and only the latest of several bodies is kept.
func TestCommentReporterRetries(t *testing.T) {
	srv := forgetest.NewTLS(t)
	c := commenterCases()[1].new(t, srv)
	// The first attempts fail for certain (turning an outage off from the
	// test could race ahead of the first attempt); fewer than MaxAttempts,
	// so only retrying writes the comment.
	srv.FailNext(3)
	rep := forge.NewCommentReporter(c, forge.CommentReporterOptions{Marker: forge.PlanMarker(""), MinBackoff: 1, MaxBackoff: 2e6})
	rep.Report(4, "old")
	rep.Report(4, "new")
	go rep.Run(t.Context())
	<-rep.Idle()
	got := srv.Comments(4)
	if len(got) != 1 || got[0].Body != forge.PlanMarker("")+"\nnew" {
		t.Errorf("comments = %+v, want one with the latest body", got)
	}
}

// TestLabelReaders: each forge's labels of a pull request are read from its
// API (past one page on GitHub and Gitea), and an unknown pull request is a
// 404 error, not "no labels".
func TestLabelReaders(t *testing.T) {
	for _, tc := range commenterCases() {
		t.Run(tc.name, func(t *testing.T) {
			srv := forgetest.NewTLS(t)
			srv.Token = "forge-token"
			lr, ok := tc.new(t, srv).(forge.LabelReader)
			if !ok {
				t.Fatalf("%s writer reads no labels", tc.name)
			}
			var want []string
			for i := range 120 {
				want = append(want, fmt.Sprintf("area/%03d", i))
			}
			want = append(want, "nkudo/destructive-ok")
			srv.SetLabels(5, want...)
			got, err := lr.Labels(t.Context(), 5)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			srv.SetLabels(6)
			if got, err := lr.Labels(t.Context(), 6); err != nil || len(got) != 0 {
				t.Errorf("no labels: %v, %v", got, err)
			}
			var fe *forge.Error
			if _, err := lr.Labels(t.Context(), 99); !errors.As(err, &fe) || fe.Status != http.StatusNotFound {
				t.Errorf("unknown pull request: err %v, want a 404", err)
			}
		})
	}
}
