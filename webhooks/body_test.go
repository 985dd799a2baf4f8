package webhooks_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/webhooks"
)

// stallingBody sends head, then blocks until released: a client still
// sending its body. read counts the bytes the transport took from it.
type stallingBody struct {
	head    []byte
	read    atomic.Int64
	release chan struct{}
	once    sync.Once
}

func newStallingBody(head string) *stallingBody {
	return &stallingBody{head: []byte(head), release: make(chan struct{})}
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		b.read.Add(int64(n))
		return n, nil
	}
	<-b.release
	return 0, io.ErrUnexpectedEOF
}

func (b *stallingBody) Close() error {
	b.once.Do(func() { close(b.release) })
	return nil
}

// deliverStalled POSTs a delivery whose body never completes and returns
// the answer, which must therefore come without the body.
func deliverStalled(t *testing.T, c *http.Client, url string, h http.Header, declared int64) (*http.Response, *stallingBody) {
	t.Helper()
	body := newStallingBody(`{"ref":"refs/heads/main",`)
	t.Cleanup(func() { _ = body.Close() })
	// The deadline only keeps a broken build from hanging the run.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	req.ContentLength = declared
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v (was the answer held back until the body arrived?)", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, body
}

// TestBodySlots: deliveries whose bodies are being read hold one of
// MaxConcurrent slots; with every slot taken, the next delivery gets 503
// with Retry-After at once, and a slot freed is usable again.
func TestBodySlots(t *testing.T) {
	st := &memStore{
		repos:      []store.Repository{{ID: "r1", Tenant: "acme", Branch: "main"}},
		secrets:    map[string]string{"acme/r1": secret},
		deliveries: map[string]bool{},
	}
	h := webhooks.New(webhooks.Options{Store: st, Sink: &sink{}, MaxConcurrent: 2})
	go h.Run(t.Context())
	mux := http.NewServeMux()
	mux.Handle("POST /v1/webhooks/{repo}", h)
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := srv.Client()

	// Two deliveries with well-formed (but unverifiable until the body
	// ends) signatures take both slots.
	hdrs := func() http.Header {
		return hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign("whatever"))
	}
	type result struct {
		code int
		err  error
	}
	var bodies []*stallingBody
	done := make(chan result, 16)
	occupy := func() {
		b := newStallingBody(`{"ref":`)
		bodies = append(bodies, b)
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v1/webhooks/r1", b)
		req.Header = hdrs()
		req.ContentLength = 1 << 10
		go func() {
			resp, err := c.Do(req)
			if err != nil {
				done <- result{err: err}
				return
			}
			resp.Body.Close()
			done <- result{code: resp.StatusCode}
		}()
	}
	occupy()
	occupy()
	// Once both are being read, a third is refused. A probe with a whole
	// body and a wrong signature tells: 401 while a slot is free, 503 after.
	// The probe holds a slot for an instant itself, so a stalled delivery
	// that arrives in that instant is refused; it is sent again.
	var resp *http.Response
	for deadline := time.Now().Add(time.Minute); ; {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v1/webhooks/r1", strings.NewReader(pushBody))
		req.Header = hdrs()
		var err error
		if resp, err = c.Do(req); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || time.Now().After(deadline) {
			break
		}
		select {
		case r := <-done:
			if r.err != nil || r.code != http.StatusServiceUnavailable {
				t.Fatalf("stalled delivery ended before its body did: %d %v", r.code, r.err)
			}
			occupy()
		default:
		}
		time.Sleep(10 * time.Millisecond)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("probe with both slots taken: %d, want 503", resp.StatusCode)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	// Ending the stalled bodies frees the slots: a signed delivery passes.
	for _, b := range bodies {
		_ = b.Close()
	}
	for range 2 {
		if r := <-done; r.err == nil && r.code != http.StatusBadRequest {
			t.Errorf("stalled delivery ended with %d, want 400 (body cut short)", r.code)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v1/webhooks/r1", strings.NewReader(pushBody))
	req.Header = hdr("X-GitHub-Event", "push", "X-GitHub-Delivery", "d1", "X-Hub-Signature-256", "sha256="+sign(pushBody))
	r, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusAccepted {
		t.Errorf("delivery after the slots were freed: %d, want 202", r.StatusCode)
	}
}

// TestRefusedBeforeBody: deliveries that can be refused from their
// headers are answered while their body is still unsent.
func TestRefusedBeforeBody(t *testing.T) {
	st := &memStore{
		repos:      []store.Repository{{ID: "r1", Tenant: "acme", Branch: "main"}},
		secrets:    map[string]string{"acme/r1": secret},
		deliveries: map[string]bool{},
	}
	h := webhooks.New(webhooks.Options{Store: st, Sink: &sink{}})
	mux := http.NewServeMux()
	mux.Handle("POST /v1/webhooks/{repo}", h)
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	signedHdr := hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign("x"))
	for _, tc := range []struct {
		name     string
		repo     string
		h        http.Header
		declared int64
		want     int
	}{
		{"unknown repository", "nope", signedHdr, 25 << 20, http.StatusNotFound},
		{"unknown repository, length not declared", "nope", signedHdr, -1, http.StatusNotFound},
		{"no signature header", "r1", hdr("X-GitHub-Event", "push"), 25 << 20, http.StatusUnauthorized},
		{"malformed signature header", "r1", hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256=zz"), 1 << 10, http.StatusUnauthorized},
		{"wrong GitLab token", "r1", hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", "no"), 1 << 10, http.StatusUnauthorized},
		{"declared length over the limit", "r1", signedHdr, 25<<20 + 1, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := deliverStalled(t, srv.Client(), srv.URL+"/v1/webhooks/"+tc.repo, tc.h, tc.declared) //nolint:bodyclose // deliverStalled closes it at cleanup
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if n := body.read.Load(); n > 64 {
				t.Errorf("client sent %d bytes", n)
			}
		})
	}
}
