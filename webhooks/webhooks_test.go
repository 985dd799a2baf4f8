package webhooks_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/webhooks"
)

const (
	secret = "hook-secret"
	sha1   = "1111111111111111111111111111111111111111"
	sha2   = "2222222222222222222222222222222222222222"
)

func sign(body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

const pushBody = `{"ref":"refs/heads/main","before":"` + sha1 + `","after":"` + sha2 + `","repository":{"default_branch":"main"}}`

func TestVerify(t *testing.T) {
	good := sign(pushBody)
	for _, tc := range []struct {
		name    string
		h       http.Header
		secret  string
		wantErr error // nil: verifies
	}{
		{"github ok", hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+good), secret, nil},
		{"github wrong", hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign("other")), secret, webhooks.ErrSignature},
		{"github no prefix", hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", good), secret, webhooks.ErrSignature},
		{"github missing", hdr("X-GitHub-Event", "push"), secret, webhooks.ErrSignature},
		{"github sha1 only", hdr("X-GitHub-Event", "push", "X-Hub-Signature", "sha1=00"), secret, webhooks.ErrSignature},
		{"github bare gitea header not enough", hdr("X-GitHub-Event", "push", "X-Gitea-Signature", good), secret, webhooks.ErrSignature},
		{"gitea bare hex", hdr("X-Gitea-Event", "push", "X-Gitea-Signature", good), secret, nil},
		{"gitea both", hdr("X-Gitea-Event", "push", "X-GitHub-Event", "push", "X-Gitea-Signature", good, "X-Hub-Signature-256", "sha256="+good), secret, nil},
		{"gitea one of two wrong", hdr("X-Gitea-Event", "push", "X-Gitea-Signature", good, "X-Hub-Signature-256", "sha256=00"), secret, webhooks.ErrSignature},
		{"forgejo", hdr("X-Forgejo-Event", "push", "X-Forgejo-Signature", good), secret, nil},
		{"gitlab ok", hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", secret), secret, nil},
		{"gitlab wrong", hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", secret+"x"), secret, webhooks.ErrSignature},
		{"gitlab missing", hdr("X-Gitlab-Event", "Push Hook"), secret, webhooks.ErrSignature},
		{"no secret configured", hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+good), "", webhooks.ErrSignature},
		{"unknown forge", hdr("X-Other", "x"), secret, webhooks.ErrUnknownForge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := webhooks.Verify(tc.h, []byte(pushBody), []byte(tc.secret))
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Verify = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestParse(t *testing.T) {
	prBody := func(action string) string {
		return `{"action":"` + action + `","number":7,"pull_request":{"number":7,"head":{"sha":"` + sha2 + `","ref":"feature"},"base":{"ref":"main"}}}`
	}
	mrBody := `{"object_kind":"merge_request","object_attributes":{"iid":3,"action":"update","source_branch":"f","target_branch":"main","last_commit":{"id":"` + sha2 + `"}}}`
	for _, tc := range []struct {
		name    string
		h       http.Header
		body    string
		want    webhooks.Event
		wantErr bool
	}{
		{"github push", hdr("X-GitHub-Event", "push", "X-GitHub-Delivery", "d1"), pushBody,
			webhooks.Event{Forge: webhooks.GitHub, Kind: webhooks.KindPush, Name: "push", DeliveryID: "d1", Ref: "refs/heads/main", Branch: "main", Before: sha1, After: sha2, DefaultBranch: "main"}, false},
		{"github tag push", hdr("X-GitHub-Event", "push"), `{"ref":"refs/tags/v1","after":"` + sha2 + `"}`,
			webhooks.Event{Forge: webhooks.GitHub, Kind: webhooks.KindIgnored, Name: "push", Ref: "refs/tags/v1", After: sha2, Reason: "push to refs/tags/v1 (not a branch)"}, false},
		{"github branch delete", hdr("X-GitHub-Event", "push"), `{"ref":"refs/heads/x","after":"0000000000000000000000000000000000000000","deleted":true}`,
			webhooks.Event{Forge: webhooks.GitHub, Kind: webhooks.KindIgnored, Name: "push", Ref: "refs/heads/x", After: "0000000000000000000000000000000000000000", Reason: "branch x deleted"}, false},
		{"github ping", hdr("X-GitHub-Event", "ping", "X-GitHub-Delivery", "d2"), `{"zen":"x"}`,
			webhooks.Event{Forge: webhooks.GitHub, Kind: webhooks.KindPing, Name: "ping", DeliveryID: "d2"}, false},
		{"github pr opened", hdr("X-GitHub-Event", "pull_request"), prBody("opened"),
			webhooks.Event{Forge: webhooks.GitHub, Kind: webhooks.KindPullRequest, Name: "pull_request", PR: 7, Action: "opened", HeadSHA: sha2, HeadRef: "feature", BaseRef: "main"}, false},
		{"github pr closed", hdr("X-GitHub-Event", "pull_request"), prBody("closed"),
			webhooks.Event{Forge: webhooks.GitHub, Kind: webhooks.KindPullRequestClosed, Name: "pull_request", PR: 7, Action: "closed", HeadSHA: sha2, HeadRef: "feature", BaseRef: "main"}, false},
		{"github pr labeled", hdr("X-GitHub-Event", "pull_request"), prBody("labeled"),
			webhooks.Event{Forge: webhooks.GitHub, Kind: webhooks.KindPullRequest, Name: "pull_request", PR: 7, Action: "labeled", HeadSHA: sha2, HeadRef: "feature", BaseRef: "main"}, false},
		{"github pr unlabeled with labels", hdr("X-GitHub-Event", "pull_request"), strings.Replace(prBody("unlabeled"), `"base":`, `"labels":[{"id":1,"name":"area/edge"},{"id":2,"name":"nkudo/destructive-ok"}],"base":`, 1),
			webhooks.Event{Forge: webhooks.GitHub, Kind: webhooks.KindPullRequest, Name: "pull_request", PR: 7, Action: "unlabeled", HeadSHA: sha2, HeadRef: "feature", BaseRef: "main",
				Labels: []string{"area/edge", "nkudo/destructive-ok"}, LabelsKnown: true}, false},
		{"gitea pr label_updated", hdr("X-Gitea-Event", "pull_request", "X-Gitea-Event-Type", "pull_request_label"), strings.Replace(prBody("label_updated"), `"base":`, `"labels":[{"id":4,"name":"nkudo/destructive-ok"}],"base":`, 1),
			webhooks.Event{Forge: webhooks.Gitea, Kind: webhooks.KindPullRequest, Name: "pull_request", PR: 7, Action: "label_updated", HeadSHA: sha2, HeadRef: "feature", BaseRef: "main",
				Labels: []string{"nkudo/destructive-ok"}, LabelsKnown: true}, false},
		{"label change on a closed pr", hdr("X-Gitea-Event", "pull_request"), strings.Replace(prBody("label_updated"), `"base":`, `"state":"closed","base":`, 1),
			webhooks.Event{Forge: webhooks.Gitea, Kind: webhooks.KindIgnored, Name: "pull_request", PR: 7, Action: "label_updated", HeadSHA: sha2, HeadRef: "feature", BaseRef: "main",
				Reason: "label change on a closed pull request"}, false},
		{"gitea pr label_cleared", hdr("X-Gitea-Event", "pull_request"), strings.Replace(prBody("label_cleared"), `"base":`, `"labels":[],"base":`, 1),
			webhooks.Event{Forge: webhooks.Gitea, Kind: webhooks.KindPullRequest, Name: "pull_request", PR: 7, Action: "label_cleared", HeadSHA: sha2, HeadRef: "feature", BaseRef: "main",
				Labels: []string{}, LabelsKnown: true}, false},
		{"gitlab update of a merged mr", hdr("X-Gitlab-Event", "Merge Request Hook"), strings.Replace(mrBody, `"action":"update"`, `"action":"update","state":"merged"`, 1),
			webhooks.Event{Forge: webhooks.GitLab, Kind: webhooks.KindIgnored, Name: "Merge Request Hook", PR: 3, Action: "update", HeadSHA: sha2, HeadRef: "f", BaseRef: "main",
				Reason: "update of a merged merge request"}, false},
		{"gitlab mr labels", hdr("X-Gitlab-Event", "Merge Request Hook"), strings.Replace(mrBody, `"object_kind":"merge_request",`, `"object_kind":"merge_request","labels":[{"id":9,"title":"nkudo/destructive-ok"}],`, 1),
			webhooks.Event{Forge: webhooks.GitLab, Kind: webhooks.KindPullRequest, Name: "Merge Request Hook", PR: 3, Action: "update", HeadSHA: sha2, HeadRef: "f", BaseRef: "main",
				Labels: []string{"nkudo/destructive-ok"}, LabelsKnown: true}, false},
		{"gitea pr merged", hdr("X-Gitea-Event", "pull_request"), `{"action":"closed","number":7,"pull_request":{"merged":true,"head":{"sha":"` + sha2 + `","ref":"feature"},"base":{"ref":"main"}}}`,
			webhooks.Event{Forge: webhooks.Gitea, Kind: webhooks.KindPullRequestClosed, Name: "pull_request", PR: 7, Action: "closed", HeadSHA: sha2, HeadRef: "feature", BaseRef: "main", Merged: true}, false},
		{"gitea pr synchronized", hdr("X-Gitea-Event", "pull_request", "X-Gitea-Delivery", "g1", "X-GitHub-Delivery", "g1"), prBody("synchronized"),
			webhooks.Event{Forge: webhooks.Gitea, Kind: webhooks.KindPullRequest, Name: "pull_request", DeliveryID: "g1", PR: 7, Action: "synchronized", HeadSHA: sha2, HeadRef: "feature", BaseRef: "main"}, false},
		{"forgejo delivery", hdr("X-Forgejo-Event", "push", "X-Forgejo-Delivery", "f1", "X-Gitea-Delivery", "g"), pushBody,
			webhooks.Event{Forge: webhooks.Forgejo, Kind: webhooks.KindPush, Name: "push", DeliveryID: "f1", Ref: "refs/heads/main", Branch: "main", Before: sha1, After: sha2, DefaultBranch: "main"}, false},
		{"gitlab push", hdr("X-Gitlab-Event", "Push Hook", "Idempotency-Key", "k1", "X-Gitlab-Event-UUID", "u1"),
			`{"object_kind":"push","ref":"refs/heads/main","before":"` + sha1 + `","after":"` + sha2 + `","project":{"default_branch":"main"}}`,
			webhooks.Event{Forge: webhooks.GitLab, Kind: webhooks.KindPush, Name: "Push Hook", DeliveryID: "k1", Ref: "refs/heads/main", Branch: "main", Before: sha1, After: sha2, DefaultBranch: "main"}, false},
		{"gitlab mr", hdr("X-Gitlab-Event", "Merge Request Hook", "X-Gitlab-Event-UUID", "u2"), mrBody,
			webhooks.Event{Forge: webhooks.GitLab, Kind: webhooks.KindPullRequest, Name: "Merge Request Hook", DeliveryID: "u2", PR: 3, Action: "update", HeadSHA: sha2, HeadRef: "f", BaseRef: "main"}, false},
		{"gitlab mr merged", hdr("X-Gitlab-Event", "Merge Request Hook"), strings.Replace(mrBody, `"action":"update"`, `"action":"merge"`, 1),
			webhooks.Event{Forge: webhooks.GitLab, Kind: webhooks.KindPullRequestClosed, Name: "Merge Request Hook", PR: 3, Action: "merge", HeadSHA: sha2, HeadRef: "f", BaseRef: "main", Merged: true}, false},
		{"gitlab mr closed", hdr("X-Gitlab-Event", "Merge Request Hook"), strings.Replace(mrBody, `"action":"update"`, `"action":"close"`, 1),
			webhooks.Event{Forge: webhooks.GitLab, Kind: webhooks.KindPullRequestClosed, Name: "Merge Request Hook", PR: 3, Action: "close", HeadSHA: sha2, HeadRef: "f", BaseRef: "main"}, false},
		{"gitlab tag", hdr("X-Gitlab-Event", "Tag Push Hook"), `{}`,
			webhooks.Event{Forge: webhooks.GitLab, Kind: webhooks.KindIgnored, Name: "Tag Push Hook", Reason: "event Tag Push Hook"}, false},
		{"unknown event", hdr("X-GitHub-Event", "issues"), `not even json`,
			webhooks.Event{Forge: webhooks.GitHub, Kind: webhooks.KindIgnored, Name: "issues", Reason: "event issues"}, false},
		{"malformed push", hdr("X-GitHub-Event", "push"), `{"ref":`, webhooks.Event{}, true},
		{"push without after", hdr("X-GitHub-Event", "push"), `{"ref":"refs/heads/main"}`, webhooks.Event{}, true},
		{"push bad sha", hdr("X-GitHub-Event", "push"), `{"ref":"refs/heads/main","after":"zz"}`, webhooks.Event{}, true},
		{"pr without head", hdr("X-GitHub-Event", "pull_request"), `{"action":"opened","number":1,"pull_request":{}}`, webhooks.Event{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := webhooks.Parse(tc.h, []byte(tc.body))
			if (err != nil) != tc.wantErr {
				t.Fatalf("Parse err = %v, wantErr %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add("push", pushBody)
	f.Add("pull_request", `{"action":"opened","number":7,"pull_request":{"number":7,"head":{"sha":"`+sha2+`"}}}`)
	f.Add("Push Hook", `{"object_kind":"push","ref":"refs/heads/main","after":"`+sha2+`"}`)
	f.Add("Merge Request Hook", `{"object_attributes":{"iid":1,"action":"open","last_commit":{"id":"`+sha2+`"}}}`)
	f.Fuzz(func(t *testing.T, event, body string) {
		for _, h := range []http.Header{
			hdr("X-GitHub-Event", event), hdr("X-Gitea-Event", event), hdr("X-Gitlab-Event", event),
		} {
			ev, err := webhooks.Parse(h, []byte(body))
			if err != nil {
				continue
			}
			switch ev.Kind {
			case webhooks.KindPush:
				if ev.Branch == "" || len(ev.After) < 40 {
					t.Fatalf("push without branch or commit: %+v", ev)
				}
			case webhooks.KindPullRequest:
				if ev.PR <= 0 || len(ev.HeadSHA) < 40 {
					t.Fatalf("pull request without number or head: %+v", ev)
				}
			case webhooks.KindPing, webhooks.KindIgnored:
			default:
				t.Fatalf("unknown kind %q", ev.Kind)
			}
			again, _ := webhooks.Parse(h, []byte(body))
			if diff := cmp.Diff(ev, again); diff != "" {
				t.Fatalf("Parse not deterministic:\n%s", diff)
			}
		}
	})
}

// memStore implements the three store methods the handler uses; the
// handler's behaviour against the real SQLite store is covered in
// tests/integration.
type memStore struct {
	mu         sync.Mutex
	repos      []store.Repository
	secrets    map[string]string
	deliveries map[string]bool
	payloads   map[string]time.Time
}

func (m *memStore) ListAllRepositories(context.Context) ([]store.Repository, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]store.Repository(nil), m.repos...), nil
}

func (m *memStore) WebhookSecret(_ context.Context, tenant, id string) (store.Secret, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.secrets[tenant+"/"+id]
	if !ok {
		return "", store.ErrNotFound
	}
	return store.Secret(s), nil
}

func (m *memStore) RecordDelivery(_ context.Context, forge, id string, _ time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := forge + "/" + id
	dup := m.deliveries[k]
	m.deliveries[k] = true
	return dup, nil
}

func (m *memStore) PruneDeliveries(context.Context, time.Time) (int64, error) { return 0, nil }

func (m *memStore) RecordPayload(_ context.Context, repo, hash string, now time.Time, window time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.payloads == nil {
		m.payloads = map[string]time.Time{}
	}
	k := repo + "/" + hash
	if at, ok := m.payloads[k]; ok && !at.Before(now.Add(-window)) {
		return true, nil
	}
	m.payloads[k] = now
	return false, nil
}

type call struct {
	Kind, Tenant, Repo, Ref string
	PR                      int
}

type sink struct {
	mu    sync.Mutex
	calls []call
}

func (s *sink) Trigger(_ context.Context, tenant, repo, ref string) (api.TriggerResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call{"trigger", tenant, repo, ref, 0})
	return api.TriggerResult{RepoID: repo, Queued: true}, nil
}

func (s *sink) Preview(_ context.Context, tenant, repo string, pr int, head string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call{"preview", tenant, repo, head, pr})
	return nil
}

func (s *sink) PreviewLabels(_ context.Context, tenant, repo string, pr int, head string, labels []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call{"preview+labels:" + strings.Join(labels, ","), tenant, repo, head, pr})
	return nil
}

func (s *sink) get() []call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]call(nil), s.calls...)
}

func TestHandler(t *testing.T) {
	st := &memStore{
		repos:      []store.Repository{{ID: "r1", Tenant: "acme", Branch: "main"}, {ID: "nosecret", Tenant: "acme"}},
		secrets:    map[string]string{"acme/r1": secret, "acme/nosecret": ""},
		deliveries: map[string]bool{},
	}
	sk := &sink{}
	// No Run: an accepted delivery reaches the sink before it is answered.
	h := webhooks.New(webhooks.Options{Store: st, Sink: sk})
	mux := http.NewServeMux()
	mux.Handle("POST /v1/webhooks/{repo}", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	send := func(repo string, h http.Header, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v1/webhooks/"+repo, strings.NewReader(body))
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	signed := func(event, delivery, body string) http.Header {
		return hdr("X-GitHub-Event", event, "X-GitHub-Delivery", delivery, "X-Hub-Signature-256", "sha256="+sign(body))
	}
	otherBranch := strings.Replace(pushBody, "refs/heads/main", "refs/heads/dev", 1)
	prBody := `{"action":"opened","number":7,"pull_request":{"number":7,"head":{"sha":"` + sha2 + `","ref":"feature"},"base":{"ref":"main"}}}`
	labeled := `{"action":"labeled","number":7,"pull_request":{"number":7,"head":{"sha":"` + sha2 + `","ref":"feature"},"base":{"ref":"main"},"labels":[{"name":"nkudo/destructive-ok"}]}}`
	steps := []struct {
		name     string
		repo     string
		h        http.Header
		body     string
		wantCode int
		wantBody string
	}{
		{"bad signature", "r1", hdr("X-GitHub-Event", "push", "X-GitHub-Delivery", "a", "X-Hub-Signature-256", "sha256="+sign("x")), pushBody, 401, "unauthorized"},
		{"no secret configured", "nosecret", signed("push", "b", pushBody), pushBody, 401, "unauthorized"},
		{"unknown repo", "nope", signed("push", "c", pushBody), pushBody, 404, "not_found"},
		{"malformed", "r1", signed("push", "d", `{"ref":`), `{"ref":`, 400, "bad_request"},
		{"unknown event", "r1", signed("issues", "e", `{}`), `{}`, 202, "ignored"},
		{"untracked branch", "r1", signed("push", "f", otherBranch), otherBranch, 202, "ignored"},
		{"ping", "r1", signed("ping", "g", `{}`), `{}`, 200, "pong"},
		{"push", "r1", signed("push", "a", pushBody), pushBody, 202, "accepted"},
		{"redelivery", "r1", signed("push", "a", pushBody), pushBody, 200, "duplicate"},
		{"replay with a new delivery ID", "r1", signed("push", "a2", pushBody), pushBody, 200, "payload accepted before"},
		{"replay without a delivery ID", "r1", hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign(pushBody)), pushBody, 200, "payload accepted before"},
		{"pull request", "r1", signed("pull_request", "h", prBody), prBody, 202, "accepted"},
		{"label added", "r1", signed("pull_request", "i", labeled), labeled, 202, "accepted"},
	}
	for _, s := range steps {
		code, body := send(s.repo, s.h, s.body)
		if code != s.wantCode || !strings.Contains(body, s.wantBody) {
			t.Errorf("%s: %d %s, want %d %s", s.name, code, body, s.wantCode, s.wantBody)
		}
	}
	want := []call{{"trigger", "acme", "r1", "", 0}, {"preview", "acme", "r1", sha2, 7}, {"preview+labels:nkudo/destructive-ok", "acme", "r1", sha2, 7}}
	if diff := cmp.Diff(want, sk.get()); diff != "" {
		t.Errorf("sink calls (-want +got):\n%s", diff)
	}
	// Only the accepted deliveries were recorded; the rejected ones changed nothing.
	st.mu.Lock()
	got := fmt.Sprint(len(st.deliveries))
	st.mu.Unlock()
	if got != "4" {
		t.Errorf("recorded deliveries = %s, want 4 (the three accepted and the replay's new ID)", got)
	}
}
