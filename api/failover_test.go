package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// replica is a real TLS server answering heartbeats with status code (0 = 200).
func replica(t *testing.T, code int, retryAfter string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if code != 0 {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"overloaded"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"inventoryVersion":7}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// failoverClient trusts every replica's certificate (httptest servers share one).
func failoverClient(t *testing.T, base string, more ...string) *Client {
	t.Helper()
	srv := httptest.NewTLSServer(nil) // only for its client's TLS settings
	hc := srv.Client()
	srv.Close()
	c, err := NewClient(ClientConfig{BaseURL: base, FailoverURLs: more, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A replica that is down (connection refused) or failing (5xx) costs one
// attempt: the same call is answered by the next URL, and later calls
// stay there.
func TestClientFailsOver(t *testing.T) {
	down, _ := replica(t, 0, "")
	downURL := down.URL
	down.Close() // connection refused from now on
	failing, failingHits := replica(t, http.StatusBadGateway, "")
	good, goodHits := replica(t, 0, "")

	c := failoverClient(t, downURL, failing.URL, good.URL)
	resp, err := c.Heartbeat(t.Context(), HeartbeatRequest{})
	if err != nil {
		t.Fatalf("heartbeat with a replica down and one failing: %v", err)
	}
	if resp.InventoryVersion != 7 || c.CurrentURL() != good.URL {
		t.Fatalf("answered %+v, now on %s; want version 7 from %s", resp, c.CurrentURL(), good.URL)
	}
	if _, err := c.Heartbeat(t.Context(), HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	if failingHits.Load() != 1 || goodHits.Load() != 2 {
		t.Errorf("failing replica asked %d times, good one %d; want 1 and 2 (the client stays where it was answered)",
			failingHits.Load(), goodHits.Load())
	}
	if c.BaseURL() != downURL {
		t.Errorf("BaseURL = %s, want the configured %s", c.BaseURL(), downURL)
	}
}

// Answers that another replica would give too (4xx) do not fail over, and
// when every replica fails, the last one's error comes back with its
// Retry-After.
func TestClientFailoverLimits(t *testing.T) {
	t.Run("4xx stays", func(t *testing.T) {
		bad, badHits := replica(t, http.StatusBadRequest, "")
		good, goodHits := replica(t, 0, "")
		c := failoverClient(t, bad.URL, good.URL)
		var ae *Error
		if _, err := c.Heartbeat(t.Context(), HeartbeatRequest{}); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
			t.Fatalf("err = %v, want the 400", err)
		}
		if badHits.Load() != 1 || goodHits.Load() != 0 || c.CurrentURL() != bad.URL {
			t.Errorf("hits %d/%d, on %s: a 400 must not fail over", badHits.Load(), goodHits.Load(), c.CurrentURL())
		}
	})
	t.Run("all overloaded", func(t *testing.T) {
		a, aHits := replica(t, http.StatusServiceUnavailable, "3")
		b, bHits := replica(t, http.StatusServiceUnavailable, "9")
		c := failoverClient(t, a.URL, b.URL)
		_, err := c.Heartbeat(t.Context(), HeartbeatRequest{})
		if !errors.Is(err, ErrUnavailable) || RetryAfter(err) != 9*time.Second {
			t.Fatalf("err = %v, Retry-After %s; want unavailable after 9s", err, RetryAfter(err))
		}
		if aHits.Load() != 1 || bHits.Load() != 1 {
			t.Errorf("hits %d/%d, want each replica asked once", aHits.Load(), bHits.Load())
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		a, _ := replica(t, http.StatusServiceUnavailable, "")
		b, bHits := replica(t, 0, "")
		c := failoverClient(t, a.URL, b.URL)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := c.Heartbeat(ctx, HeartbeatRequest{}); err == nil {
			t.Fatal("a cancelled call succeeded")
		}
		if bHits.Load() != 0 {
			t.Error("a cancelled call was sent to the next replica")
		}
	})
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Now()
	tests := []struct {
		h    string
		want time.Duration
		tol  time.Duration
	}{
		{"", 0, 0},
		{"5", 5 * time.Second, 0},
		{" 12 ", 12 * time.Second, 0},
		{"-3", 0, 0},
		{"soon", 0, 0},
		{"999999", maxRetryAfter, 0},
		{now.Add(-time.Hour).UTC().Format(http.TimeFormat), 0, 0},
		{now.Add(30 * time.Second).UTC().Format(http.TimeFormat), 30 * time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		got := retryAfter(tt.h)
		if got < tt.want-tt.tol || got > tt.want+tt.tol {
			t.Errorf("retryAfter(%q) = %s, want %s (±%s)", tt.h, got, tt.want, tt.tol)
		}
	}
	if RetryAfter(errors.New("plain")) != 0 {
		t.Error("RetryAfter of a non-API error is not 0")
	}
}

func TestFailoverURLValidated(t *testing.T) {
	_, err := NewClient(ClientConfig{BaseURL: "https://a.example", FailoverURLs: []string{"b.example"}})
	if err == nil || !strings.Contains(err.Error(), "failover control plane URL") {
		t.Fatalf("err = %v, want one naming the failover URL", err)
	}
}

// A long-poll parked on a replica whose host vanishes (no reset, no
// answer: a proxy that stops forwarding) ends once an unanswered ping
// shows the connection dead, and the next call fails over.
func TestClientDropsSilentConnection(t *testing.T) {
	parked := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == PathAgentPlan {
			parked <- struct{}{}
			<-r.Context().Done() // a long-poll that never answers
			return
		}
		_, _ = w.Write([]byte(`{"inventoryVersion":7}`))
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	good, _ := replica(t, 0, "")

	// The vanishing host: a TCP relay that can stop forwarding without closing.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var frozen atomic.Bool
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); up.Close() })
			relay := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if err != nil {
						return
					}
					if frozen.Load() {
						continue // swallowed: the host is gone
					}
					if _, err := dst.Write(buf[:n]); err != nil {
						return
					}
				}
			}
			go relay(up, c)
			go relay(c, up)
		}
	}()

	tr := srv.Client().Transport.(*http.Transport)
	c, err := NewClient(ClientConfig{BaseURL: "https://" + ln.Addr().String(), FailoverURLs: []string{good.URL},
		RootCAs: tr.TLSClientConfig.RootCAs, IdlePing: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	done := make(chan error, 1)
	go func() {
		_, err := c.WaitPlan(t.Context(), "", time.Hour)
		done <- err
	}()
	select {
	case <-parked:
	case <-time.After(20 * time.Second):
		t.Fatal("long-poll never reached the server")
	}
	frozen.Store(true)
	select {
	case err := <-done:
		// The dead connection failed the poll over to the good replica,
		// which answered at once.
		if err != nil {
			t.Fatalf("long-poll after the host vanished: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("long-poll on a silent connection never ended")
	}
	if c.CurrentURL() != good.URL {
		t.Errorf("now on %s, want %s", c.CurrentURL(), good.URL)
	}
}
