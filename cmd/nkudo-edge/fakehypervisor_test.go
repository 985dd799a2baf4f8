package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// TestMain lets this test binary serve as the fake hypervisor, as the
// agent binary does when the provider starts its link.
func TestMain(m *testing.M) {
	if isFakeHypervisor() {
		os.Exit(fakeHypervisor())
	}
	os.Exit(m.Run())
}

// TestRunWithFakeHypervisor is the development loop of docs/getting-started
// by hand: enroll, then `nkudo-edge run --hypervisor-fake`, against a real
// control plane; a plan whose kernel is an image pushed to the control
// plane is fetched over the agent's mTLS connection and applied.
func TestRunWithFakeHypervisor(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	env.NewSite("acme", "dev-1")
	tok := env.EnrollmentToken("acme", "dev-1")
	kernel := bytes.Repeat([]byte("not really a kernel\n"), 512)
	sum := sha256.Sum256(kernel)
	digest := hex.EncodeToString(sum[:])
	img, err := acme.Client.PushImage(t.Context(), "vmlinuz", digest, int64(len(kernel)), bytes.NewReader(kernel))
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	pkiDir, state := filepath.Join(dir, "pki"), filepath.Join(dir, "state")
	var out bytes.Buffer
	if code := run(t.Context(), []string{"enroll", "--control-plane", env.URL, "--token", tok.Token, "--ca-hash", tok.CAFingerprint, "--pki-dir", pkiDir}, &out, io.Discard); code != 0 {
		t.Fatalf("enroll: exit %d: %s", code, out.String())
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"run", "--hypervisor-fake", "--state-dir", state, "--pki-dir", pkiDir, "--poll-wait", "2s"}, &bytes.Buffer{}, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("agent exit code %d after its context ended", code)
		}
		// VMs outlive their agent by design: shut their VMMs down.
		socks, _ := filepath.Glob(filepath.Join(state, "hypervisor", "vms", "*", "api.sock"))
		for _, sock := range socks {
			shutdownVMM(t, sock)
		}
	})

	st := env.Store()
	var inv model.Inventory
	waitFor(t, "the first heartbeat", func() bool {
		inv, err = st.Inventory(t.Context(), "acme", "dev-1")
		return err == nil && inv.Reported
	})
	spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 128,
		Kernel: &model.Kernel{URL: img.URL, SHA256: digest, Cmdline: "console=ttyS0"}}
	plan := model.Plan{ID: "p-dev", Tenant: "acme", Site: "dev-1", InventoryVersion: inv.Version, Actions: []model.Action{
		{ID: "a-create", Operation: model.OpCreate, VM: "web", Reason: model.ReasonMissing, Spec: &spec, SpecHash: spec.Hash()},
		{ID: "a-start", Operation: model.OpStart, VM: "web", Reason: model.ReasonMissing},
	}}
	if _, err := st.StorePlan(t.Context(), store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	var p store.StoredPlan
	waitFor(t, "the plan to finish", func() bool {
		p, err = st.GetPlan(t.Context(), "acme", "p-dev")
		return err == nil && (p.Status == model.PlanSucceeded || p.Status == model.PlanFailed)
	})
	if p.Status != model.PlanSucceeded {
		for _, a := range p.Actions {
			t.Logf("%s %s: %s %s", a.Action.Operation, a.Action.VM, a.Status, a.Error)
		}
		t.Fatalf("plan %s", p.Status)
	}
	if b, err := os.ReadFile(filepath.Join(state, "hypervisor", "images", digest)); err != nil || !bytes.Equal(b, kernel) {
		t.Errorf("the pushed kernel is not in the agent's image cache: %v", err)
	}
	// The host facts name the fake as the site's hypervisor.
	site, err := acme.Client.GetSite(t.Context(), "dev-1")
	if err != nil || site.Facts == nil || site.Facts.Hypervisor.Version != "v53.0" || site.Facts.Hypervisor.Error != "" {
		t.Errorf("hypervisor facts of %+v: %v", site, err)
	}
	if link, err := os.Readlink(filepath.Join(state, "bin", "cloud-hypervisor")); err != nil || link == "" {
		t.Errorf("fake hypervisor link: %q, %v", link, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGettingStartedEdgeCommandsParse: the nkudo-edge commands of
// docs/getting-started.md name real commands and flags (the page's
// enroll line is the one `nkudoctl sites token` prints; tests/e2e
// TestGettingStarted runs it).
func TestGettingStartedEdgeCommandsParse(t *testing.T) {
	b, err := os.ReadFile("../../docs/getting-started.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "nkudo-edge ") {
			continue
		}
		n++
		line = strings.TrimSuffix(line, " &")
		if _, err := parse(t, strings.Fields(line)[1:]...); err != nil {
			t.Errorf("%q does not parse: %v", line, err)
		}
	}
	if n < 1 {
		t.Errorf("found %d nkudo-edge commands on the page, want the run of the development section", n)
	}
}

// shutdownVMM asks the VMM on sock to exit (vmm.shutdown).
func shutdownVMM(t *testing.T, sock string) {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPut, "http://localhost/api/v1/vmm.shutdown", nil)
	if err != nil {
		t.Error(err)
		return
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Errorf("shut down the VMM on %s: %v", sock, err)
		return
	}
	resp.Body.Close()
}
