package integration

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// stalledBody sends a few bytes, then nothing until the test ends: a
// client that has not finished sending its body.
type stalledBody struct {
	head []byte
	sent atomic.Int64
	stop <-chan struct{}
}

func (b *stalledBody) Read(p []byte) (int, error) {
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		b.sent.Add(int64(n))
		return n, nil
	}
	<-b.stop
	return 0, io.ErrUnexpectedEOF
}

// TestWebhookRefusedBeforeBody: over the control plane's real TLS, a
// delivery for an unknown repository, or without a signature for a known
// one, is answered while its declared 25 MB body is still unsent.
func TestWebhookRefusedBeforeBody(t *testing.T) {
	g := startGitOps(t, gitopsConfig{})
	for _, tc := range []struct {
		name, repo string
		headers    map[string]string
		want       int
	}{
		{"unknown repository", "no-such-repo", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + strings.Repeat("ab", 32)}, http.StatusNotFound},
		{"no signature", g.repo.ID, map[string]string{"X-Gitea-Event": "push"}, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop := make(chan struct{})
			body := &stalledBody{head: []byte(`{"ref":"refs/heads/main",`), stop: stop}
			// The deadline only keeps a regression from hanging the run.
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.env.URL+"/v1/webhooks/"+tc.repo, body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = 25_000_000
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := g.hc.Do(req)
			if err != nil {
				t.Fatalf("no answer while the body was unsent: %v", err)
			}
			defer resp.Body.Close()
			defer close(stop) // first: closing the response waits for the body writer
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if n := body.sent.Load(); n > 64 {
				t.Errorf("client sent %d bytes", n)
			}
		})
	}
}

// TestWebhookReplayDropped: a captured delivery sent again with a new
// delivery ID, or with none, verifies but is dropped as a replay (the
// store remembers its body's hash), and only one reconcile follows.
func TestWebhookReplayDropped(t *testing.T) {
	g := startGitOps(t, gitopsConfig{})
	g.fleet(1, 1)
	g.env.NewSite("acme", "site-0001")
	c1 := g.git.Commit("one VM")
	payload := pushPayload(strings.Repeat("0", 40), c1)
	if code, body := g.webhook("push", "original", payload, true); code != 202 {
		t.Fatalf("original delivery: %d %s", code, body)
	}
	for _, delivery := range []string{"replayed-with-new-id", ""} {
		if code, body := g.webhook("push", delivery, payload, true); code != 200 || !strings.Contains(body, "payload accepted before") {
			t.Errorf("replay with delivery ID %q: %d %s, want 200 duplicate", delivery, code, body)
		}
	}
	eventually(t, "reconciled once", func() bool { st, _ := g.forgeState(c1, "nkudo/plan"); return st == "success" })
	if n := len(g.plans()); n != 1 {
		t.Errorf("%d plans, want 1", n)
	}
}
