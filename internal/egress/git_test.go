package egress

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// TestGitTransport: the transport go-git gets refuses a request without a
// fetch scope, and a scoped fetch reads at most its byte cap.
func TestGitTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Write(bytes.Repeat([]byte("x"), n))
	}))
	t.Cleanup(srv.Close)
	c := &http.Client{Transport: gitTransport{}}

	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/?n=10", nil)
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("request without a scope: err = %v, want ErrDenied", err)
	}

	g := NewGit(Policy{}, 1000)
	ctx, f := g.Context(t.Context())
	req, _ = http.NewRequestWithContext(ctx, "GET", srv.URL+"/?n=10", nil)
	resp, err = c.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("loopback under the default policy: err = %v, want ErrDenied", err)
	}

	g = NewGit(Policy{Allow: Loopback()}, 1000)
	get := func(n int) (int, error) {
		ctx, f = g.Context(t.Context())
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/?n="+strconv.Itoa(n), nil)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return len(b), err
	}
	if n, err := get(1000); err != nil || n != 1000 || f.Err() != nil {
		t.Fatalf("a body of exactly the cap: read %d, err %v, fetch err %v", n, err, f.Err())
	}
	if _, err := get(1001); !errors.Is(err, ErrTooLarge) || !errors.Is(f.Err(), ErrTooLarge) {
		t.Fatalf("a body over the cap: err %v, fetch err %v; want ErrTooLarge", err, f.Err())
	}
	// The cap is per fetch, across its requests.
	ctx, f = g.Context(t.Context())
	total := 0
	for range 3 {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/?n=400", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		total += len(b)
	}
	if total > 1000 || !errors.Is(f.Err(), ErrTooLarge) {
		t.Fatalf("three requests of 400 bytes under a 1000-byte cap: read %d, fetch err %v", total, f.Err())
	}
}
