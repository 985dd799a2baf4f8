package giteatest_test

import (
	"encoding/json"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/tests/e2e/giteatest"
)

func TestMain(m *testing.M) { os.Exit(giteatest.Main(m)) }

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// TestHarness proves the harness against a real Gitea and nothing of
// n-kudo: a push is delivered as a signed webhook, a test delivery is
// signed too, and a commit status posted through the API reads back.
func TestHarness(t *testing.T) {
	g := giteatest.Start(t)
	const secret = "harness-secret"
	rec := giteatest.NewRecorder(t)
	repo := g.CreateRepo(t)
	hook := g.CreateHook(t, repo, rec.URL, secret)

	w := giteatest.Clone(t, repo)
	w.Write(t, map[string][]byte{"README.md": []byte("harness\n")})
	sha := w.Commit(t, "first commit")
	w.Push(t, "main")

	d := rec.Wait(t, 30*time.Second, "for the push of "+sha, func(d giteatest.Delivery) bool {
		return d.Event == "push"
	})
	if err := d.VerifySignature(secret); err != nil {
		t.Errorf("push delivery: %v", err)
	}
	if err := d.VerifySignature("wrong-secret"); err == nil {
		t.Error("the signature verified under a wrong secret too")
	}
	if !uuidRE.MatchString(d.ID) {
		t.Errorf("X-Gitea-Delivery = %q, want a UUID", d.ID)
	}
	if got := d.Header.Get("X-GitHub-Delivery"); got != d.ID {
		t.Errorf("X-GitHub-Delivery = %q, want the X-Gitea-Delivery %q", got, d.ID)
	}
	var push struct {
		Ref        string `json:"ref"`
		After      string `json:"after"`
		Repository struct {
			FullName string `json:"full_name"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(d.Body, &push); err != nil {
		t.Fatalf("push payload: %v\n%s", err, d.Body)
	}
	if diff := cmp.Diff([]string{"refs/heads/main", sha, repo.FullName},
		[]string{push.Ref, push.After, push.Repository.FullName}); diff != "" {
		t.Errorf("push payload (ref, after, repository) mismatch (-want +got):\n%s", diff)
	}

	// A test delivery is a second, separately identified, signed push.
	g.TestHook(t, repo, hook.ID)
	d2 := rec.Wait(t, 30*time.Second, "for the test delivery", func(x giteatest.Delivery) bool {
		return x.Event == "push" && x.ID != d.ID
	})
	if err := d2.VerifySignature(secret); err != nil {
		t.Errorf("test delivery: %v", err)
	}

	want := giteatest.Status{State: "success", Context: "harness/check", Description: "ok", TargetURL: "http://127.0.0.1/x"}
	g.CreateStatus(t, repo, sha, giteatest.Status{State: "pending", Context: want.Context, Description: "running"})
	g.CreateStatus(t, repo, sha, want)
	all, err := g.Statuses(t.Context(), repo, sha)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("statuses of %s: got %d, want 2:\n%s", sha, len(all), giteatest.FormatStatuses(all))
	}
	got := giteatest.Latest(all)[want.Context]
	got.ID, got.Created = 0, ""
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("latest status mismatch (-want +got):\n%s", diff)
	}
	if head, err := g.BranchHead(t.Context(), repo, "main"); err != nil || head != sha {
		t.Errorf("main = %q, %v; want %s", head, err, sha)
	}
}

// TestPullRequestMerge checks the pull request helpers: open a PR from a
// branch, merge it, and main moves to the merge commit.
func TestPullRequestMerge(t *testing.T) {
	g := giteatest.Start(t)
	repo := g.CreateRepo(t)
	w := giteatest.Clone(t, repo)
	w.Write(t, map[string][]byte{"a.txt": []byte("a\n")})
	w.Commit(t, "base")
	w.Push(t, "main")
	w.Checkout(t, "change")
	w.Write(t, map[string][]byte{"b.txt": []byte("b\n")})
	head := w.Commit(t, "change")
	w.Push(t, "change")

	pr := g.OpenPullRequest(t, repo, "change", "main", "a change")
	if pr.Head.SHA != head {
		t.Errorf("PR head = %s, want %s", pr.Head.SHA, head)
	}
	merged := g.MergePullRequest(t, repo, pr.Number)
	main, err := g.BranchHead(t.Context(), repo, "main")
	if err != nil {
		t.Fatal(err)
	}
	if main != merged.MergeCommitSHA {
		t.Errorf("main = %s after the merge, want the merge commit %s", main, merged.MergeCommitSHA)
	}
}

// TestForwarderReplay checks the forwarding recorder: the target gets the
// delivery as Gitea sent it, and a replay repeats it byte for byte with
// the same delivery ID and a still valid signature.
func TestForwarderReplay(t *testing.T) {
	g := giteatest.Start(t)
	const secret = "forward-secret"
	target := giteatest.NewRecorder(t)
	fwd := giteatest.NewForwarder(t, target.URL, nil)
	repo := g.CreateRepo(t)
	g.CreateHook(t, repo, fwd.URL, secret, "push")
	w := giteatest.Clone(t, repo)
	w.Write(t, map[string][]byte{"f.txt": []byte("f\n")})
	w.Commit(t, "one")
	w.Push(t, "main")

	isPush := func(d giteatest.Delivery) bool { return d.Event == "push" }
	seen := fwd.Wait(t, 30*time.Second, "at the forwarder", isPush)
	if seen.Answer != 200 {
		t.Errorf("forwarder recorded answer %d, want the target's 200", seen.Answer)
	}
	got := target.Wait(t, 30*time.Second, "at the target", isPush)
	if got.ID != seen.ID || string(got.Body) != string(seen.Body) {
		t.Fatalf("target got delivery %s (%d bytes), want %s (%d bytes)", got.ID, len(got.Body), seen.ID, len(seen.Body))
	}
	code, _, err := seen.Replay(t.Context(), nil, target.URL)
	if err != nil || code != 200 {
		t.Fatalf("replay: %d, %v", code, err)
	}
	all := target.All()
	if len(all) != 2 || all[1].ID != seen.ID || string(all[1].Body) != string(seen.Body) {
		t.Fatalf("target has %d deliveries after the replay, want the original twice", len(all))
	}
	if err := all[1].VerifySignature(secret); err != nil {
		t.Errorf("replayed delivery: %v", err)
	}
}
