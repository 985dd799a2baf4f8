package controlplane_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
)

// TestAgentRequestBound: with room for one agent request, a second one
// while the first is being served gets 503 with a Retry-After of 1–10 s,
// unless it is a heartbeat (served from the heartbeat reserve); once the
// first is done the next one is served. A parked long-poll does not hold
// the slot.
func TestAgentRequestBound(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) { o.MaxAgentRequests = 1 }})
	env.NewTenant("acme")
	ag := env.Enroll("acme", "store-1")
	ctx := t.Context()

	// A parked long-poll gives its slot back.
	polled := make(chan error, 1)
	go func() {
		_, err := ag.Client.WaitPlan(ctx, "", 55*time.Second)
		polled <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	for env.Server().LongPolls() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("long-poll never parked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Until the poll has read the store it holds the slot: retry.
	deadline = time.Now().Add(20 * time.Second)
	for {
		_, err := ag.Client.Heartbeat(ctx, api.HeartbeatRequest{})
		if err == nil {
			break
		}
		if !errors.Is(err, api.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("heartbeat beside a parked long-poll: %v", err)
		}
	}

	// A log upload whose body trickles in holds the only slot. (An answer
	// reaches the client just before its slot is released, so the slow
	// one may find the slot still taken: then it starts again.) Not a
	// heartbeat: one could take the heartbeat reserve instead.
	hc := env.HTTPClient(&ag.Cert)
	var refused *api.Error
	var pw *io.PipeWriter
	var slow chan int
	deadline = time.Now().Add(20 * time.Second)
	for refused == nil {
		if time.Now().After(deadline) {
			t.Fatal("a request beside one in progress was never refused")
		}
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		slow = make(chan int, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, env.URL+api.PathAgentLogs, pr)
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				t.Errorf("slow log upload: %v", err)
				slow <- 0
				return
			}
			resp.Body.Close()
			slow <- resp.StatusCode
		}()
		go func() { _, _ = pw.Write([]byte(`{"lines":`)) }()
		for {
			// Logs, not a heartbeat: heartbeats have a reserve beyond the
			// bound. An empty batch is answered 400 once admitted.
			_, err := ag.Client.SendLogs(ctx, nil)
			var ae *api.Error
			if errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable {
				refused = ae
			} else if err != nil && (ae == nil || ae.Status != http.StatusBadRequest) {
				t.Fatalf("logs: %v", err)
			}
			select {
			case code := <-slow:
				if code != http.StatusServiceUnavailable {
					t.Fatalf("the slow log upload ended early: HTTP %d", code)
				}
				refused = nil // refused itself: start again
			default:
				if refused == nil {
					continue
				}
			}
			break
		}
	}
	if refused.Status != http.StatusServiceUnavailable || !errors.Is(refused, api.ErrUnavailable) ||
		refused.RetryAfter < time.Second || refused.RetryAfter > 10*time.Second {
		t.Fatalf("refused with %v (Retry-After %s), want 503 unavailable after 1–10s", refused, refused.RetryAfter)
	}
	// A heartbeat takes the reserve (one slot here) while the bound is full.
	if _, err := ag.Client.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Errorf("heartbeat while the slow one holds the only slot: %v; want it served from the heartbeat reserve", err)
	}

	go func() { _, _ = pw.Write([]byte(`[]}`)); pw.Close() }()
	if code := <-slow; code != http.StatusBadRequest {
		t.Fatalf("the slow log upload: HTTP %d, want 400 (served: an empty batch)", code)
	}
	if _, err := ag.Client.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat once the slot is free: %v", err)
	}
	if got := metricValue(t, env, `nkudo_overload_refused_total{what="agent_request"}`); got < 1 {
		t.Errorf("refusals counted %v, want at least 1", got)
	}
}

// TestHandshakeBound: with room for one TLS handshake, a client that
// stalls its handshake holds the slot, so another handshake fails; once
// the stalled connection closes, handshakes succeed again.
func TestHandshakeBound(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) { o.MaxHandshakes = 1 }})
	addr := env.URL[len("https://"):]

	// The stalled client: its ClientHello goes out, then it never reads.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	stalled := tls.Client(stallAfterHello{Conn: raw, release: release}, &tls.Config{RootCAs: env.CAPool, ServerName: "127.0.0.1"})
	handshook := make(chan struct{})
	go func() { _ = stalled.Handshake(); close(handshook) }()
	t.Cleanup(func() { raw.Close(); close(release); <-handshook })

	deadline := time.Now().Add(20 * time.Second)
	for {
		err := handshake(addr, env)
		if err != nil {
			break // the slot is held
		}
		if time.Now().After(deadline) {
			t.Fatal("handshakes kept succeeding beside a stalled one")
		}
	}
	raw.Close() // the server's handshake reads EOF and gives the slot back
	deadline = time.Now().Add(20 * time.Second)
	for {
		err := handshake(addr, env)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handshake after the stalled connection closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := metricValue(t, env, `nkudo_overload_refused_total{what="tls_handshake"}`); got < 1 {
		t.Errorf("refused handshakes counted %v, want at least 1", got)
	}
}

// stallAfterHello sends what the client writes (its ClientHello) but reads
// nothing until released, so the server's handshake waits for the client.
type stallAfterHello struct {
	net.Conn
	release chan struct{}
}

func (s stallAfterHello) Read([]byte) (int, error) {
	<-s.release
	return 0, net.ErrClosed
}

func handshake(addr string, env *cptest.Env) error {
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: env.CAPool, ServerName: "127.0.0.1"})
	if err != nil {
		return err
	}
	return c.Close()
}

// metricValue reads one series from /metrics.
func metricValue(t *testing.T, env *cptest.Env, series string) float64 {
	t.Helper()
	code, body := env.Raw(nil, "", http.MethodGet, api.PathMetrics, nil)
	if code != http.StatusOK {
		t.Fatalf("metrics: HTTP %d", code)
	}
	for _, line := range bytes.Split([]byte(body), []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(series+" ")); ok {
			v, err := strconv.ParseFloat(string(rest), 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

// TestHTTP2ReadFrameBound: the server announces the protocol's smallest
// SETTINGS_MAX_FRAME_SIZE, so no client can make a connection keep a
// read buffer larger than 16 KiB (the default would allow 1 MiB).
func TestHTTP2ReadFrameBound(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	conn, err := tls.Dial("tcp", strings.TrimPrefix(env.URL, "https://"), &tls.Config{RootCAs: env.CAPool, NextProtos: []string{"h2"}, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	// The client preface and an empty SETTINGS frame; the server's first
	// frame is its SETTINGS.
	if _, err := io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var head [9]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		t.Fatal(err)
	}
	n := int(head[0])<<16 | int(head[1])<<8 | int(head[2])
	if head[3] != 0x4 || n%6 != 0 || n > 1024 {
		t.Fatalf("first frame: type %d, length %d; want SETTINGS", head[3], n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(conn, payload); err != nil {
		t.Fatal(err)
	}
	const settingsMaxFrameSize = 0x5
	for i := 0; i < n; i += 6 {
		id := int(payload[i])<<8 | int(payload[i+1])
		v := int(payload[i+2])<<24 | int(payload[i+3])<<16 | int(payload[i+4])<<8 | int(payload[i+5])
		if id == settingsMaxFrameSize {
			if v != 16<<10 {
				t.Errorf("SETTINGS_MAX_FRAME_SIZE %d, want %d", v, 16<<10)
			}
			return
		}
	}
	t.Errorf("the server's SETTINGS (%d bytes) carry no SETTINGS_MAX_FRAME_SIZE", n)
}
