package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestCheckLoopbackAddr(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:6060", "[::1]:0", "localhost:6060", "127.0.0.2:1"} {
		if err := checkLoopbackAddr(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{":6060", "0.0.0.0:6060", "10.0.0.1:6060", "example.com:6060", "127.0.0.1"} {
		if err := checkLoopbackAddr(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// The debug listener serves the pprof index and refuses a non-loopback address.
func TestDebugAddrServesPprof(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if _, err := startDebug(t.Context(), log, "0.0.0.0:0"); err == nil || !strings.Contains(err.Error(), "--debug-addr") {
		t.Fatalf("non-loopback address: err = %v, want one naming --debug-addr", err)
	}
	// Find a free port, then hand it to startDebug.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	stop, err := startDebug(t.Context(), log, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("status %d, body %.200q", resp.StatusCode, body)
	}
}
