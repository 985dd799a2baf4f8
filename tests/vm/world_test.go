package vm_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/agent/providers/qemu"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/tests/e2e/e2etest"
	"github.com/nkudo/nkudo/tests/vm/guest"
)

const (
	tenant = "acme"
	site   = "edge"
	// convergeTimeout bounds one commit's way from push to nkudo/apply
	// with real guests under TCG on a shared 2-core machine.
	convergeTimeout = 4 * time.Minute
)

// world is one control plane, one site with one `nkudo-edge run
// --provider qemu` and one repository.
type world struct {
	t        *testing.T
	bins     e2etest.Binaries
	logDir   string
	dataDir  string
	listen   string
	url      string
	token    string
	client   *api.Client
	hc       *http.Client
	cp       *e2etest.Proc
	work     *e2etest.WorkTree
	repoID   string
	secret   string
	agentDir string
	agent    *e2etest.Proc
	art      *artifacts
}

// requireVM skips loudly, or fails under NKUDO_E2E_VM=require, when the
// packages the suite needs are missing.
func requireVM(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIP: -short: the real-VM suite boots guests under QEMU")
	}
	if m := guest.Missing(); len(m) > 0 {
		msg := fmt.Sprintf("the real-VM suite needs the packages %s: apt-get install -y %s", strings.Join(m, ", "), strings.Join(m, " "))
		if os.Getenv("NKUDO_E2E_VM") == "require" {
			t.Fatal(msg)
		}
		t.Skip("SKIP: " + msg)
	}
	if m := e2etest.MissingPackages(); len(m) > 0 {
		t.Skipf("SKIP: the suite needs packages that are not in the tree yet: %s", strings.Join(m, ", "))
	}
}

func newWorld(t *testing.T) *world {
	requireVM(t)
	w := &world{t: t, logDir: t.TempDir()}
	w.bins = e2etest.Build(t)
	w.art = serveArtifacts(t)
	w.bootstrap()
	w.startControlPlane()
	git := e2etest.NewGitServer(t)
	repoURL := git.InitBare(t, "fleet.git")
	w.work = e2etest.Clone(t, repoURL)
	w.secret = "vm-secret"
	r, err := w.client.CreateRepo(t.Context(), api.CreateRepoRequest{Name: "fleet", URL: repoURL, Branch: "main", WebhookSecret: w.secret})
	if err != nil {
		t.Fatalf("register repository: %v", err)
	}
	w.repoID = r.ID
	w.enroll()
	w.startAgent()
	return w
}

// ---- artifacts: the guest's kernel, initramfs and a blank root image ----

type artifacts struct {
	url     string
	digests map[string]string
	// gate, when set, holds requests for /gated/* until it is closed;
	// gated receives one value per such request.
	mu    sync.Mutex
	gate  chan struct{}
	gated chan string
}

func serveArtifacts(t *testing.T) *artifacts {
	dir := t.TempDir()
	kernel, initrd, err := guest.Files(dir)
	if err != nil {
		t.Fatalf("build the guest: %v", err)
	}
	root := filepath.Join(dir, "root.raw")
	if err := os.WriteFile(root, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"vmlinuz": kernel, "initramfs": initrd, "root.raw": root}
	a := &artifacts{digests: map[string]string{}, gated: make(chan string, 16)}
	for name, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		a.digests[name] = hex.EncodeToString(sum[:])
	}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		if rest, ok := strings.CutPrefix(name, "gated/"); ok {
			name = rest
			a.mu.Lock()
			gate := a.gate
			a.mu.Unlock()
			if gate != nil {
				a.gated <- name
				select {
				case <-gate:
				case <-r.Context().Done():
					return
				}
			}
		}
		path, ok := files[name]
		if !ok {
			http.NotFound(rw, r)
			return
		}
		http.ServeFile(rw, r, path)
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

// vmSpec is what a VM manifest of the suite says.
type vmSpec struct {
	name, host, marker string
	cpus               int
	state              model.VMState
	powerOffOnce       bool
	gatedImage         bool
}

func (w *world) vmYAML(v vmSpec) []byte {
	if v.cpus == 0 {
		v.cpus = 1
	}
	if v.state == "" {
		v.state = model.VMRunning
	}
	img := w.art.url + "/root.raw"
	if v.gatedImage {
		img = w.art.url + "/gated/root.raw"
	}
	ud := guest.UserData(v.host, v.marker, v.powerOffOnce)
	return []byte(fmt.Sprintf(`apiVersion: nkudo.io/v1alpha1
kind: VirtualMachine
metadata:
  name: %s
  site: %s
spec:
  state: %s
  cpus: %d
  maxCpus: 2
  memoryMiB: 256
  maxMemoryMiB: 512
  image:
    url: %s
    sha256: %s
  kernel:
    url: %s/vmlinuz
    sha256: %s
    cmdline: %s
    initramfs:
      url: %s/initramfs
      sha256: %s
  networks:
    - bridge: br-vm
  cloudInit:
    userData: |
%s`, v.name, site, v.state, v.cpus, img, w.art.digests["root.raw"], w.art.url, w.art.digests["vmlinuz"], guest.Cmdline,
		w.art.url, w.art.digests["initramfs"], indent(ud, "      ")))
}

func indent(s, pre string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" {
			b.WriteString(pre + l)
		}
	}
	return b.String()
}

func siteYAML() []byte {
	return []byte("apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: " + site + "\nspec: {}\n")
}

// ---- control plane ----

func (w *world) bootstrap() {
	t := w.t
	w.dataDir = t.TempDir()
	w.token = e2etest.Bootstrap(t, w.bins.Nkudo, w.cpEnv(), tenant, "vm")
	w.listen = e2etest.FreeAddr(t)
	w.url = "https://" + w.listen
}

// cpEnv runs the control plane on its embedded SQLite database.
func (w *world) cpEnv() []string {
	return []string{"NKUDO_DATA_DIR=" + w.dataDir, "NKUDO_DATABASE_URL=", "DATABASE_URL=", "NKUDO_ENROLL_PER_MINUTE=600", "NKUDO_ENROLL_BURST=50"}
}

func (w *world) startControlPlane() {
	t := w.t
	w.cp = e2etest.Start(t, e2etest.ProcConfig{
		Name: "nkudo", Bin: w.bins.Nkudo, LogDir: w.logDir, Env: w.cpEnv(),
		Args: []string{"serve", "--listen", w.listen, "--public-url", w.url, "--min-heartbeat-interval", "1s",
			"--shutdown-timeout", "5s", "--log-level", "debug",
			// The git server (http-backend) is on loopback.
			"--allow-local-sources", "--egress-allow", "127.0.0.0/8", "--egress-allow", "::1/128"},
	})
	pool := e2etest.WaitCA(t, w.cp, filepath.Join(w.dataDir, "pki", "ca.crt"), 60*time.Second)
	w.client, w.hc = e2etest.Clients(t, w.url, w.token, pool)
	e2etest.WaitReady(t, w.cp, w.client, 60*time.Second)
}

// ---- the agent ----

func (w *world) enroll() {
	t := w.t
	if _, err := w.client.CreateSite(t.Context(), site); err != nil {
		t.Fatalf("create site: %v", err)
	}
	tok, err := w.client.CreateEnrollmentToken(t.Context(), site, 10*time.Minute)
	if err != nil {
		t.Fatalf("enrollment token: %v", err)
	}
	// Short: QMP sockets live under it and must fit 107 bytes.
	dir, err := os.MkdirTemp("", "vm-")
	if err != nil {
		t.Fatal(err)
	}
	w.agentDir = dir
	t.Cleanup(func() {
		// After the agent has stopped (cleanups run in reverse order): end
		// the guests, which outlive agents by design.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
		defer cancel()
		if p, err := qemu.New(qemu.Options{StateDir: w.qemuDir(), StopTimeout: time.Second}); err == nil {
			if err := p.Shutdown(ctx); err != nil {
				t.Errorf("stop the guests: %v", err)
			}
		}
		os.RemoveAll(dir)
	})
	e2etest.Run(t, t.Context(), nil, w.bins.Edge, "enroll", "--control-plane", w.url, "--token", tok.Token,
		"--ca-hash", tok.CAFingerprint, "--pki-dir", filepath.Join(dir, "pki"))
}

func (w *world) qemuDir() string            { return filepath.Join(w.agentDir, "qemu") }
func (w *world) vmDir(name string) string   { return filepath.Join(w.qemuDir(), "vms", name) }
func (w *world) qmpSock(name string) string { return filepath.Join(w.vmDir(name), "qmp.sock") }

// startAgent starts (or restarts) `nkudo-edge run --provider qemu`.
func (w *world) startAgent() {
	w.agent = e2etest.Start(w.t, e2etest.ProcConfig{
		Name: "nkudo-edge", Bin: w.bins.Edge, LogDir: w.logDir,
		Args: []string{"run", "--provider", "qemu", "--accel", "auto", "--pki-dir", filepath.Join(w.agentDir, "pki"),
			"--state-dir", w.agentDir, "--netbird", w.bins.NetBird, "--disable-networking",
			"--stop-timeout", "30s", "--poll-wait", "5s", "--log-level", "debug"},
	})
}

// ---- git, webhooks, statuses ----

func (w *world) push(t *testing.T, msg string) string {
	t.Helper()
	before, after := w.work.CommitAndPush(t, msg)
	e2etest.Eventually(t, t.Context(), 30*time.Second, "push webhook accepted", func(ctx context.Context) error {
		status, body, err := e2etest.DeliverGitHubPush(ctx, w.hc, w.url+api.Path(api.PathWebhook, w.repoID), w.secret, "",
			e2etest.PushEvent{Ref: "refs/heads/main", Before: before, After: after})
		switch {
		case err != nil:
			return err
		case status == http.StatusNotFound:
			return fmt.Errorf("HTTP %d %s", status, body)
		case status == http.StatusNotImplemented:
			t.Skip("SKIP: the GitOps loop is not wired into `nkudo serve`: the webhook endpoint answers 501")
		case status/100 != 2:
			t.Fatalf("deliver push webhook for %s: HTTP %d %s", after, status, body)
		}
		return nil
	})
	return after
}

func (w *world) waitApplied(t *testing.T, sha string) {
	t.Helper()
	e2etest.Eventually(t, t.Context(), convergeTimeout, "nkudo/apply success on "+sha[:12], func(ctx context.Context) error {
		if done, err := w.agent.Exited(); done {
			t.Fatalf("nkudo-edge exited: %v\n%s", err, e2etest.Tail(w.agent.LogPath, 40))
		}
		ss, err := w.client.CommitStatuses(ctx, w.repoID, sha)
		if err != nil {
			return err
		}
		var seen []string
		for _, s := range ss {
			seen = append(seen, s.Context+"="+s.State+" ("+s.Description+")")
			if s.State == "failure" || s.State == "error" {
				t.Fatalf("commit %s: %s is %s: %s\nagent log:\n%s", sha[:12], s.Context, s.State, s.Description, e2etest.Tail(w.agent.LogPath, 40))
			}
			if s.Context == "nkudo/apply" && s.State == "success" {
				return nil
			}
		}
		sort.Strings(seen)
		return fmt.Errorf("statuses: %s", strings.Join(seen, ", "))
	})
}

// ---- guests ----

// waitGuest polls a VM's serial console until its last status line
// satisfies ok, and returns that line.
func (w *world) waitGuest(t *testing.T, name, what string, ok func(guest.Status) bool) guest.Status {
	t.Helper()
	var st guest.Status
	e2etest.Eventually(t, t.Context(), convergeTimeout, name+": "+what, func(context.Context) error {
		b, err := os.ReadFile(filepath.Join(w.vmDir(name), "serial.log"))
		if err != nil {
			return err
		}
		s, found := guest.LastStatus(b)
		if !found || !ok(s) {
			return fmt.Errorf("last status %+v; console tail:\n%s", s, tail(b, 600))
		}
		st = s
		return nil
	})
	return st
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// qemuPIDs lists the live QEMU processes whose command line names the
// VM's QMP socket.
func (w *world) qemuPIDs(name string) []string {
	needle := "unix:" + w.qmpSock(name) + ","
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), needle) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			i := strings.LastIndexByte(string(st), ')')
			if i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
				continue // a zombie is not a running VM
			}
		}
		out = append(out, e.Name())
	}
	return out
}

// rssKiB is the resident set of process pid.
func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var n int
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &n)
			return n
		}
	}
	return 0
}
