package e2etest

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/tests/fakes/chfake"
)

// Mutating lists the Cloud Hypervisor endpoints that change a VM; a
// successful call of one of them is an operation "applied" at the edge.
var Mutating = map[string]bool{
	"vm.create": true, "vm.boot": true, "vm.shutdown": true, "vm.power-button": true,
	"vm.delete": true, "vm.resize": true, "vm.reboot": true, "vmm.shutdown": true,
}

// Applied counts, per VM (the directory holding its API socket) and per
// mutating endpoint, the calls the fake answered with success. A call that
// hung, was faulted or failed changed nothing and is not counted.
func Applied(entries []chfake.LogEntry) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, e := range entries {
		if !Mutating[e.Endpoint] || e.Status < 200 || e.Status > 299 || e.Fault != "" && e.Fault != "ignore" {
			continue
		}
		vm := filepath.Base(filepath.Dir(e.Socket))
		if out[vm] == nil {
			out[vm] = map[string]int{}
		}
		out[vm][e.Endpoint]++
	}
	return out
}

// ReadRequestLog reads the fake hypervisor's request log, failing the test on a bad line.
func ReadRequestLog(t testing.TB, path string) []chfake.LogEntry {
	t.Helper()
	entries, err := chfake.ReadRequestLog(path)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// FormatRequestLog renders entries one per line, for failure messages.
func FormatRequestLog(entries []chfake.LogEntry) string {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "%s pid=%d %s %s %s -> %d %s\n", e.Time.Format("15:04:05.000"), e.PID,
			filepath.Base(filepath.Dir(e.Socket)), e.Method, e.Endpoint, e.Status, e.Fault)
	}
	return b.String()
}

// SetFaults writes a fake hypervisor control file ({"faults": [...]}),
// which every fake VMM re-reads on each request. No faults removes it.
func SetFaults(t testing.TB, controlFile string, faults ...chfake.Fault) {
	t.Helper()
	if len(faults) == 0 {
		if err := os.Remove(controlFile); err != nil && !os.IsNotExist(err) {
			t.Fatalf("clear faults: %v", err)
		}
		return
	}
	b, err := json.Marshal(map[string]any{"faults": faults})
	if err != nil {
		t.Fatalf("encode faults: %v", err)
	}
	tmp := controlFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatalf("write faults: %v", err)
	}
	if err := os.Rename(tmp, controlFile); err != nil {
		t.Fatalf("write faults: %v", err)
	}
}

// ShutdownVMMs asks every VMM whose API socket lies under dir to exit
// (vmm.shutdown). VMMs run in their own session so they outlive agent
// restarts; tests call this at cleanup so nothing is left running. It
// returns the sockets it could not reach.
func ShutdownVMMs(ctx context.Context, dir string) []string {
	var socks []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSocket != 0 && strings.HasSuffix(path, ".sock") {
			socks = append(socks, path)
		}
		return nil
	})
	sort.Strings(socks)
	var failed []string
	for _, s := range socks {
		if err := vmmShutdown(ctx, s); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", s, err))
		}
	}
	return failed
}

func vmmShutdown(ctx context.Context, sock string) error {
	hc := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://localhost/api/v1/vmm.shutdown", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("vmm.shutdown: HTTP %d", resp.StatusCode)
	}
	return nil
}
