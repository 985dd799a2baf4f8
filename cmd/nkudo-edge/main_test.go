package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/api"
)

func TestVersionAndFacts(t *testing.T) {
	var out bytes.Buffer
	if code := run(t.Context(), []string{"version"}, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "nkudo-edge dev protocol 1") {
		t.Fatalf("version: code %d, output %q", code, out.String())
	}
	out.Reset()
	state := t.TempDir()
	if code := run(t.Context(), []string{"facts", "--state-dir", state, "--hypervisor", "/nonexistent/cloud-hypervisor", "--netbird", "/nonexistent/netbird"}, &out, io.Discard); code != 0 {
		t.Fatalf("facts: code %d", code)
	}
	var req api.HeartbeatRequest
	if err := json.Unmarshal(out.Bytes(), &req); err != nil {
		t.Fatalf("facts output is not a heartbeat request: %v\n%s", err, out.String())
	}
	if req.Facts.CPUs == 0 || req.Facts.Hypervisor.Error == "" || req.Facts.NetBird.Error == "" || req.VMs == nil {
		t.Errorf("facts = %+v", req)
	}
}

func TestEnrollAndRunFailClearly(t *testing.T) {
	cases := map[string][]string{
		"bad ca hash":  {"enroll", "--control-plane", "https://127.0.0.1:1", "--token", "x.y", "--ca-hash", "md5:00", "--pki-dir", t.TempDir()},
		"unreachable":  {"enroll", "--control-plane", "https://127.0.0.1:1", "--token", "x.y", "--ca-hash", "sha256:" + strings.Repeat("0", 64), "--pki-dir", t.TempDir()},
		"not enrolled": {"run", "--state-dir", t.TempDir(), "--pki-dir", t.TempDir()},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if code := run(t.Context(), args, &out, io.Discard); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
		})
	}
}

// TestFactsWithQEMUProvider: --provider qemu reports QEMU and its version
// (or why there is none) in the host facts.
func TestFactsWithQEMUProvider(t *testing.T) {
	var out bytes.Buffer
	state := t.TempDir()
	if code := run(t.Context(), []string{"facts", "--provider", "qemu", "--state-dir", state, "--qemu", "/nonexistent/qemu-system-x86_64", "--netbird", "/nonexistent/netbird"}, &out, io.Discard); code != 0 {
		t.Fatalf("facts: code %d", code)
	}
	var req api.HeartbeatRequest
	if err := json.Unmarshal(out.Bytes(), &req); err != nil {
		t.Fatalf("facts output is not a heartbeat request: %v\n%s", err, out.String())
	}
	if h := req.Facts.Hypervisor; h.Name != "qemu" || !strings.Contains(h.Error, "/nonexistent/qemu-system-x86_64") {
		t.Errorf("hypervisor facts = %+v, want qemu with the missing binary named", h)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return
	}
	out.Reset()
	if code := run(t.Context(), []string{"facts", "--provider", "qemu", "--state-dir", state, "--netbird", "/nonexistent/netbird"}, &out, io.Discard); code != 0 {
		t.Fatalf("facts: code %d", code)
	}
	req = api.HeartbeatRequest{}
	if err := json.Unmarshal(out.Bytes(), &req); err != nil {
		t.Fatal(err)
	}
	if h := req.Facts.Hypervisor; h.Name != "qemu" || h.Version == "" || h.Error != "" {
		t.Errorf("hypervisor facts = %+v, want qemu with its version", h)
	}
}

// TestVersionFlagAndJSON: --version prints what `version` prints, and
// `version -o json` the build identity with the protocol version.
func TestVersionFlagAndJSON(t *testing.T) {
	var flag, cmd, js bytes.Buffer
	if code := run(t.Context(), []string{"--version"}, &flag, io.Discard); code != 0 {
		t.Fatalf("--version: exit %d", code)
	}
	if code := run(t.Context(), []string{"version"}, &cmd, io.Discard); code != 0 {
		t.Fatalf("version: exit %d", code)
	}
	if flag.String() != cmd.String() || !strings.HasPrefix(flag.String(), "nkudo-edge ") {
		t.Errorf("--version printed %q, version %q", flag.String(), cmd.String())
	}
	if code := run(t.Context(), []string{"version", "-o", "json"}, &js, io.Discard); code != 0 {
		t.Fatalf("version -o json: exit %d", code)
	}
	var v struct {
		Version  string `json:"version"`
		Protocol int    `json:"protocolVersion"`
	}
	if err := json.Unmarshal(js.Bytes(), &v); err != nil || v.Version == "" || v.Protocol != api.ProtocolVersion {
		t.Errorf("version -o json: %+v, %v\n%s", v, err, js.String())
	}
}

// TestUsageErrorShowsThatCommand: a usage error exits 2 and prints the
// usage of the command it is about, not of every command.
func TestUsageErrorShowsThatCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"enroll", "--control-plane", "https://x", "--no-such-flag"}, &stdout, &stderr)
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	got := stderr.String()
	if !strings.Contains(got, "--no-such-flag") || !strings.Contains(got, "nkudo-edge enroll") {
		t.Errorf("stderr lacks the error or the enroll usage:\n%s", got)
	}
	if strings.Contains(got, "debug-bundle") {
		t.Errorf("stderr shows other commands:\n%s", got)
	}
}
