package webhooks_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/webhooks"
)

// BenchmarkAccept measures answering a signed push delivery: lookup,
// HMAC check, parse, de-duplication and queueing (the forge's wait).
func BenchmarkAccept(b *testing.B) {
	st := &memStore{
		repos:      []store.Repository{{ID: "r1", Tenant: "acme", Branch: "main"}},
		secrets:    map[string]string{"acme/r1": secret},
		deliveries: map[string]bool{},
	}
	h := webhooks.New(webhooks.Options{Store: st, Sink: &sink{}})
	go h.Run(b.Context())
	pad := strings.Repeat(" ", 8<<10) // a realistic 8 KiB payload
	n := 0
	for b.Loop() {
		n++
		// Each body differs, as real pushes do: a repeated body is a replay.
		body := strings.TrimSuffix(pushBody, "}") + fmt.Sprintf(`,"n":%d}`, n) + pad
		sig := "sha256=" + sign(body)
		req := httptest.NewRequest(http.MethodPost, "/v1/webhooks/r1", strings.NewReader(body))
		req.SetPathValue("repo", "r1")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", fmt.Sprint("d", n))
		req.Header.Set("X-Hub-Signature-256", sig)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}
