package reconciler

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/sqlite"
)

// TestWebhooksQueueIntoTaskQueue: a webhook delivery goes straight into
// the reconciler's one task queue before it is answered (no Run, no
// second queue): pushes coalesce per repository, and once the queue is
// full a delivery for another repository is still answered 202 but not
// queued, as are manual triggers and previews refused.
func TestWebhooksQueueIntoTaskQueue(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	admin := store.Actor{Kind: store.ActorAdmin, ID: "test"}
	if _, err := st.CreateTenant(ctx, admin, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	g := gittest.New(t)
	var repos []store.Repository
	for _, name := range []string{"one", "two", "three"} {
		repo, err := st.CreateRepository(ctx, admin, store.Repository{Tenant: "acme", Name: name, URL: g.Remote, Branch: "main"}, "hook-secret")
		if err != nil {
			t.Fatal(err)
		}
		repos = append(repos, repo)
	}
	loop, err := NewLoop(Options{Store: st, DataDir: t.TempDir(), PollInterval: -1, QueueSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(loop.Close)

	n := 0
	push := func(repo store.Repository) int {
		t.Helper()
		n++ // each push names its own commit: the same body twice is a replay
		body := fmt.Sprintf(`{"ref":"refs/heads/main","before":"%040d","after":"%040d"}`, 0, n)
		mac := hmac.New(sha256.New, []byte("hook-secret"))
		mac.Write([]byte(body))
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/webhooks/"+repo.ID, strings.NewReader(body))
		req.SetPathValue("repo", repo.ID)
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", fmt.Sprint("d", n))
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		rec := httptest.NewRecorder()
		loop.Webhooks.ServeHTTP(rec, req)
		return rec.Code
	}
	for i, step := range []struct {
		repo        store.Repository
		wantWaiting int
	}{
		{repos[0], 1},
		{repos[0], 1}, // coalesced
		{repos[1], 2},
		{repos[2], 2}, // refused: full
		{repos[1], 2}, // coalesced, full or not
	} {
		if code := push(step.repo); code != http.StatusAccepted {
			t.Errorf("push %d to %s: %d, want 202", i, step.repo.Name, code)
		}
		if got := loop.queue.waiting(); got != step.wantWaiting {
			t.Errorf("after push %d to %s: %d tasks waiting, want %d", i, step.repo.Name, got, step.wantWaiting)
		}
	}

	res, err := loop.Trigger(ctx, "acme", repos[2].ID, "")
	if err != nil || res.Queued || !strings.Contains(res.Message, "full") {
		t.Errorf("manual trigger with the queue full: %+v, %v; want not queued, saying the queue is full", res, err)
	}
	if res, err := loop.Trigger(ctx, "acme", repos[0].ID, "main"); err != nil || !res.Queued {
		t.Errorf("manual trigger of a waiting repository: %+v, %v; want queued (coalesced)", res, err)
	}
	if err := loop.Preview(ctx, "acme", repos[0].ID, 7, strings.Repeat("a", 40)); !errors.Is(err, ErrQueueFull) {
		t.Errorf("preview with the queue full: %v, want ErrQueueFull", err)
	}
	var got []string
	for tk := loop.queue.pop(); tk != nil; tk = loop.queue.pop() {
		got = append(got, fmt.Sprintf("%s %s %q", tk.kind, tk.repoID, tk.ref))
		loop.queue.done(tk)
	}
	want := []string{
		fmt.Sprintf("reconcile %s %q", repos[0].ID, "main"),
		fmt.Sprintf("reconcile %s %q", repos[1].ID, ""),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("queued tasks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
