package chfake_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/tests/fakes/chfake"
)

func client(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}, Timeout: 5 * time.Second}
}

type call struct {
	method, endpoint, body string
	status                 int
	contains               string // substring of the response body
}

func do(t *testing.T, c *http.Client, method, endpoint, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "http://localhost/api/v1/"+endpoint, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, endpoint, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func start(t *testing.T, cfg chfake.Config) (*chfake.Server, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "chf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	srv := chfake.New(cfg)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe(ctx, sock) }()
	t.Cleanup(func() { cancel(); <-errc })
	deadline := time.Now().Add(5 * time.Second)
	// Dial rather than stat: the socket file appears at bind, before listen,
	// and a connect in between is refused.
	for {
		if conn, err := net.Dial("unix", sock); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("fake did not listen on its socket")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return srv, sock
}

const cfgJSON = `{"payload":{"kernel":"/bin/sh"},"cpus":{"boot_vcpus":1,"max_vcpus":2},"memory":{"size":536870912,"hotplug_size":536870912}}`

func TestStateMachineAndQuirks(t *testing.T) {
	_, sock := start(t, chfake.Config{})
	c := client(sock)
	steps := []call{
		{"GET", "vmm.ping", "", 200, `"version":"53.0"`},
		{"PUT", "vmm.ping", "", 400, ""},
		{"GET", "vm.boot", "", 400, ""},
		{"GET", "vm.nope", "", 404, ""},
		{"GET", "vm.info", "", 404, "VM is not created"},
		{"PUT", "vm.delete", "", 204, ""},
		{"PUT", "vm.boot", "", 404, ""},
		{"PUT", "vm.create", "{bad", 400, ""},
		{"PUT", "vm.create", cfgJSON, 204, ""},
		{"PUT", "vm.create", cfgJSON, 500, `["Error from API"`},
		{"GET", "vm.info", "", 200, `"state":"Created"`},
		{"PUT", "vm.shutdown", "", 500, "not running"},
		{"PUT", "vm.boot", "{}", 400, ""},
		{"PUT", "vm.boot", "", 204, ""},
		{"PUT", "vm.boot", "", 500, "already created"},
		{"GET", "vm.info", "", 200, `"state":"Running"`},
		{"GET", "vm.counters", "", 200, ""},
		{"PUT", "vm.resize", `{"desired_vcpus":3}`, 500, "max_vcpus"},
		{"PUT", "vm.resize", `{"desired_ram":2147483648}`, 500, "exceeds"},
		{"PUT", "vm.resize", `{"desired_vcpus":2,"desired_ram":1073741824}`, 204, ""},
		{"GET", "vm.info", "", 200, `"boot_vcpus":2`},
		{"GET", "vm.info", "", 200, `"memory_actual_size":1073741824`},
		{"PUT", "vm.shutdown", "", 204, ""},
		{"GET", "vm.info", "", 200, `"state":"Created"`},
		{"PUT", "vm.boot", "", 204, ""},
		{"PUT", "vm.delete", "", 204, ""},
		{"GET", "vm.info", "", 404, ""},
	}
	for i, s := range steps {
		status, body := do(t, c, s.method, s.endpoint, s.body)
		if status != s.status || !strings.Contains(body, s.contains) {
			t.Fatalf("step %d %s %s: got %d %s, want %d containing %q", i, s.method, s.endpoint, status, body, s.status, s.contains)
		}
		if status >= 500 {
			var chain []string
			if err := json.Unmarshal([]byte(body), &chain); err != nil || len(chain) == 0 {
				t.Errorf("step %d: error body %q is not a JSON array of strings", i, body)
			}
		}
	}
}

func TestPowerButtonAndVMMShutdown(t *testing.T) {
	t.Run("no-shutdown keeps the VMM", func(t *testing.T) {
		srv, sock := start(t, chfake.Config{NoShutdown: true})
		c := client(sock)
		do(t, c, "PUT", "vm.create", cfgJSON)
		do(t, c, "PUT", "vm.boot", "")
		if st, _ := do(t, c, "PUT", "vm.power-button", ""); st != 204 {
			t.Fatalf("power-button: %d", st)
		}
		if got := srv.State(); got != chfake.StateCreated {
			t.Fatalf("state after power-off = %q, want Created", got)
		}
	})
	t.Run("power-off exits the VMM", func(t *testing.T) {
		srv, sock := start(t, chfake.Config{})
		c := client(sock)
		do(t, c, "PUT", "vm.create", cfgJSON)
		do(t, c, "PUT", "vm.boot", "")
		do(t, c, "PUT", "vm.power-button", "")
		select {
		case <-srv.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("VMM did not exit after guest power-off")
		}
	})
	t.Run("ignored power button", func(t *testing.T) {
		srv, sock := start(t, chfake.Config{Faults: []chfake.Fault{{Endpoint: "vm.power-button", Ignore: true}}})
		c := client(sock)
		do(t, c, "PUT", "vm.create", cfgJSON)
		do(t, c, "PUT", "vm.boot", "")
		do(t, c, "PUT", "vm.power-button", "")
		if got := srv.State(); got != chfake.StateRunning {
			t.Fatalf("state = %q, want Running (guest ignores the button)", got)
		}
	})
	t.Run("vmm.shutdown answers 200 then exits", func(t *testing.T) {
		srv, sock := start(t, chfake.Config{})
		if st, _ := do(t, client(sock), "PUT", "vmm.shutdown", ""); st != 200 {
			t.Fatalf("vmm.shutdown: %d, want 200", st)
		}
		select {
		case <-srv.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("VMM did not exit")
		}
	})
}

func TestFaultsAndRequestLog(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "requests.jsonl")
	control := filepath.Join(dir, "control.json")
	srv, sock := start(t, chfake.Config{RequestLog: logPath, ControlFile: control,
		Faults: []chfake.Fault{{Endpoint: "vm.boot", Nth: 1, Status: 500, Error: "boom"}}})
	c := client(sock)
	do(t, c, "PUT", "vm.create", cfgJSON)
	if st, body := do(t, c, "PUT", "vm.boot", ""); st != 500 || !strings.Contains(body, "boom") {
		t.Fatalf("first boot: %d %s, want the injected 500", st, body)
	}
	if st, _ := do(t, c, "PUT", "vm.boot", ""); st != 204 {
		t.Fatalf("second boot: %d, want 204", st)
	}
	if err := os.WriteFile(control, []byte(`{"faults":[{"endpoint":"vm.info","status":503,"error":"scripted"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, _ := do(t, c, "GET", "vm.info", ""); st != 503 {
		t.Fatalf("vm.info with control-file fault: %d, want 503", st)
	}
	if got := srv.Calls("vm.boot"); got != 2 {
		t.Errorf("Calls(vm.boot) = %d, want 2", got)
	}
	entries, err := chfake.ReadRequestLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Method+" "+e.Endpoint+" "+http.StatusText(e.Status))
	}
	want := []string{"PUT vm.create No Content", "PUT vm.boot Internal Server Error", "PUT vm.boot No Content", "GET vm.info Service Unavailable"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("request log (-want +got):\n%s", d)
	}
}

func TestHangReleasedByShutdown(t *testing.T) {
	_, sock := start(t, chfake.Config{Faults: []chfake.Fault{{Endpoint: "vm.create", Hang: true}}})
	c := client(sock)
	c.Timeout = 200 * time.Millisecond
	req, _ := http.NewRequestWithContext(t.Context(), "PUT", "http://localhost/api/v1/vm.create", strings.NewReader(cfgJSON))
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("hung vm.create answered")
	}
}

// TestProgram runs the real fake binary the way the agent launches Cloud Hypervisor.
func TestProgram(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary; skipped in -short mode")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cloud-hypervisor")
	build := exec.Command("go", "build", "-o", bin, "github.com/nkudo/nkudo/tests/fakes/cloud-hypervisor")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build fake: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "cloud-hypervisor v53.0" {
		t.Fatalf("--version = %q, %v", out, err)
	}
	sock := filepath.Join(dir, "api.sock")
	// A stale socket left by a dead process is replaced (v53 takes <path>.lock).
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	for _, arg := range []string{"path=" + sock, sock} {
		cmd := exec.Command(bin, "--api-socket", arg)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := client(sock)
		deadline := time.Now().Add(10 * time.Second)
		for {
			req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://localhost/api/v1/vmm.ping", nil)
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("fake never answered ping: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// A second VMM on the same socket fails with ApiSocketInUse.
		if out, err := exec.Command(bin, "--api-socket", sock).CombinedOutput(); err == nil || !strings.Contains(string(out), "ApiSocketInUse") {
			t.Errorf("second VMM on a live socket: err=%v out=%s", err, out)
		}
		if st, _ := do(t, c, "PUT", "vmm.shutdown", ""); st != 200 {
			t.Fatalf("vmm.shutdown = %d", st)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("fake exit after vmm.shutdown: %v", err)
		}
	}
}

func TestExitFault(t *testing.T) {
	srv, sock := start(t, chfake.Config{Faults: []chfake.Fault{{Endpoint: "vm.boot", Exit: true}}})
	c := client(sock)
	do(t, c, "PUT", "vm.create", cfgJSON)
	req, _ := http.NewRequestWithContext(t.Context(), "PUT", "http://localhost/api/v1/vm.boot", nil)
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 500 {
			t.Fatalf("vm.boot answered %d from a VMM told to die", resp.StatusCode)
		}
	}
	select {
	case <-srv.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("VMM did not exit")
	}
	if srv.ExitCode() != 1 {
		t.Errorf("exit code %d, want 1", srv.ExitCode())
	}
	if srv.State() == chfake.StateRunning {
		t.Error("the VM booted although the VMM died first")
	}
}
