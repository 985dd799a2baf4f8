package giteatest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Delivery is one webhook request as received.
type Delivery struct {
	// Event is X-Gitea-Event (push, pull_request, ...); ID is X-Gitea-Delivery.
	Event, ID string
	Header    http.Header
	Body      []byte
	// Answer is the forward target's HTTP status (Forwarder only; 0 when
	// the target could not be reached).
	Answer int
}

// Recorder is a loopback HTTP server that keeps every webhook delivery.
type Recorder struct {
	// URL receives deliveries (any path).
	URL string

	mu   sync.Mutex
	got  []Delivery
	wake chan struct{}
}

// NewRecorder starts a recorder that answers 200 to every POST; it stops at cleanup.
func NewRecorder(t testing.TB) *Recorder {
	t.Helper()
	return NewForwarder(t, "", nil)
}

// NewForwarder starts a recorder that also passes every delivery on, byte
// for byte with its headers, to target with hc (nil: a plain client), and
// answers with the target's status. A test can then replay exactly what
// the target received, delivery ID included.
func NewForwarder(t testing.TB, target string, hc *http.Client) *Recorder {
	t.Helper()
	rec := &Recorder{wake: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d := Delivery{
			Event: r.Header.Get("X-Gitea-Event"), ID: r.Header.Get("X-Gitea-Delivery"),
			Header: r.Header.Clone(), Body: body, Answer: http.StatusOK,
		}
		answerBody := ""
		if target != "" {
			code, b, err := d.Replay(r.Context(), hc, target)
			d.Answer, answerBody = code, b
			if err != nil {
				d.Answer, answerBody = 0, err.Error()
			}
		}
		rec.mu.Lock()
		rec.got = append(rec.got, d)
		close(rec.wake)
		rec.wake = make(chan struct{})
		rec.mu.Unlock()
		if d.Answer == 0 {
			http.Error(w, answerBody, http.StatusBadGateway)
			return
		}
		w.WriteHeader(d.Answer)
		io.WriteString(w, answerBody)
	}))
	t.Cleanup(srv.Close)
	rec.URL = srv.URL + "/hook"
	return rec
}

// All returns the deliveries received so far, in arrival order.
func (r *Recorder) All() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.got...)
}

// Wait returns the first delivery that match accepts, waiting up to
// timeout (deliveries arrive a few seconds after the event); it fails the
// test when none arrives.
func (r *Recorder) Wait(t testing.TB, timeout time.Duration, what string, match func(Delivery) bool) Delivery {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for _, d := range r.got {
			if match(d) {
				r.mu.Unlock()
				return d
			}
		}
		wake, n := r.wake, len(r.got)
		r.mu.Unlock()
		select {
		case <-wake:
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: %v", what, t.Context().Err())
		case <-deadline.C:
			t.Fatalf("no webhook delivery %s within %s (%d other deliveries)", what, timeout, n)
		}
	}
}

// Sign is the bare hex HMAC-SHA256 of body under secret, as Gitea signs.
func Sign(body []byte, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks both signatures Gitea sends: X-Gitea-Signature
// (bare hex) and X-Hub-Signature-256 ("sha256=" + the same hex).
func (d Delivery) VerifySignature(secret string) error {
	want := Sign(d.Body, secret)
	got := d.Header.Get("X-Gitea-Signature")
	if got == "" {
		return errors.New("no X-Gitea-Signature header")
	}
	if !hmac.Equal([]byte(got), []byte(want)) {
		return fmt.Errorf("X-Gitea-Signature %q is not the HMAC-SHA256 of the body under the secret", got)
	}
	if hub := d.Header.Get("X-Hub-Signature-256"); hub != "sha256="+want {
		return fmt.Errorf("X-Hub-Signature-256 %q, want sha256=%s", hub, want)
	}
	return nil
}

// Replay posts the delivery again, byte for byte with the same headers,
// to url with hc (nil: a plain client) and returns the answer's status and body.
func (d Delivery) Replay(ctx context.Context, hc *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(d.Body))
	if err != nil {
		return 0, "", fmt.Errorf("replay request: %w", err)
	}
	for k, v := range d.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Accept-Encoding", "Connection", "User-Agent":
			continue
		}
		req.Header[k] = append([]string(nil), v...)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("replay delivery %s: %w", d.ID, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), nil
}
