package e2e_test

// The end-to-end suite: the real `nkudo`, `nkudo-edge` and fake
// `cloud-hypervisor` binaries, Postgres from a throw-away cluster
// (internal/pgtest), a bare git repository served over HTTP by git's own
// http-backend, and two sites with one agent process each. Commits are
// pushed with git and announced with signed webhooks; statuses are read
// through the API. Mid-plan crashes (an agent killed with SIGKILL, the
// control plane killed with SIGKILL) are made deterministic by scripted
// slowness in the fake hypervisor, and the fake's request log proves that
// nothing was applied twice.

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/tests/e2e/e2etest"
	"github.com/nkudo/nkudo/tests/e2e/giteatest"
	"github.com/nkudo/nkudo/tests/fakes/chfake"
)

// TestMain removes the built binaries, stops the shared Gitea and the
// Postgres cluster of internal/pgtest, and removes its directory, after the
// run.
func TestMain(m *testing.M) {
	os.Exit(e2etest.Main(m, giteatest.Close, pgtest.Close))
}

const (
	e2eTenant = "acme"
	// convergeTimeout bounds one commit's way from push to nkudo/apply.
	convergeTimeout = 90 * time.Second
)

// world is one run of the suite: control plane, agents, repository.
type world struct {
	t        *testing.T
	bins     e2etest.Binaries
	logDir   string
	dataDir  string
	dbURL    string
	listen   string
	url      string
	token    string
	pool     *x509.CertPool
	client   *api.Client
	hc       *http.Client
	cp       *e2etest.Proc
	work     *e2etest.WorkTree
	repoID   string
	secret   string
	head     string
	agents   map[string]*agentProc
	payloads map[string]string // artifact name → URL
	digests  map[string]string // artifact name → sha256
}

type agentProc struct {
	site    string
	dir     string // state and PKI
	reqLog  string // the fake hypervisor's request log
	control string // the fake hypervisor's control file
	proc    *e2etest.Proc
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: -short: the end-to-end suite builds and runs the real binaries")
	}
	if m := e2etest.MissingPackages(); len(m) > 0 {
		t.Skipf("SKIP: the end-to-end suite needs packages that are not in the tree yet: %s", strings.Join(m, ", "))
	}
	w := &world{t: t, logDir: t.TempDir(), agents: map[string]*agentProc{}}
	w.dbURL = pgtest.URL(t)
	w.bins = e2etest.Build(t)
	w.startArtifacts()
	w.bootstrap()
	w.startControlPlane()
	w.requireGitOps()

	git := e2etest.NewGitServer(t)
	repoURL := git.InitBare(t, "fleet.git")
	w.work = e2etest.Clone(t, repoURL)
	w.registerRepo(repoURL)

	for _, site := range []string{"alpha", "beta"} {
		w.enroll(site)
		w.startAgent(site)
	}

	if !t.Run("first commit converges at both sites", func(t *testing.T) {
		w.work.Write(t, map[string][]byte{
			"sites/alpha.yaml":  siteYAML("alpha"),
			"sites/beta.yaml":   siteYAML("beta"),
			"vms/alpha/a1.yaml": w.vmYAML("a1", "alpha", 1, 256),
			"vms/alpha/a2.yaml": w.vmYAML("a2", "alpha", 1, 256),
			"vms/beta/b1.yaml":  w.vmYAML("b1", "beta", 1, 256),
			"vms/beta/b2.yaml":  w.vmYAML("b2", "beta", 1, 256),
		})
		sha := w.push(t, "two sites, two VMs each")
		w.waitApplied(t, sha)
	}) {
		return
	}

	if !t.Run("agent killed mid-plan converges after restart", func(t *testing.T) {
		alpha := w.agents["alpha"]
		// vm.boot at alpha takes a minute: the agent is surely inside it when killed.
		e2etest.SetFaults(t, alpha.control, chfake.Fault{Endpoint: "vm.boot", Delay: chfake.Duration(time.Minute)})
		w.work.Write(t, map[string][]byte{
			"vms/alpha/a3.yaml": w.vmYAML("a3", "alpha", 1, 256),
			"vms/beta/b3.yaml":  w.vmYAML("b3", "beta", 1, 256),
		})
		sha := w.push(t, "a3 at alpha, b3 at beta")
		w.waitActionRunning(t, sha, "alpha", model.OpStart, "a3")
		alpha.proc.Kill()
		e2etest.SetFaults(t, alpha.control)
		w.startAgent("alpha")
		w.waitApplied(t, sha)
	}) {
		return
	}

	if !t.Run("control plane killed mid-plan converges after restart", func(t *testing.T) {
		beta := w.agents["beta"]
		// vm.create at beta takes 8s: the control plane dies during the
		// plan's first action; the agent finishes the whole plan while it
		// is down (buffering results and logs), and delivers them to the
		// restarted process (same database, data dir and port).
		e2etest.SetFaults(t, beta.control, chfake.Fault{Endpoint: "vm.create", Delay: chfake.Duration(8 * time.Second)})
		w.work.Write(t, map[string][]byte{"vms/beta/b4.yaml": w.vmYAML("b4", "beta", 1, 256)})
		w.work.Edit(t, "vms/beta/b1.yaml", func(s string) string {
			return strings.Replace(s, "cpus: 1\n", "cpus: 2\n", 1)
		})
		sha := w.push(t, "b4 at beta, b1 resized")
		w.waitActionRunning(t, sha, "beta", model.OpCreate, "b4")
		w.cp.Kill()
		e2etest.SetFaults(t, beta.control)
		e2etest.Eventually(t, t.Context(), convergeTimeout, "beta finishes the plan with the control plane down", func(context.Context) error {
			got := e2etest.Applied(e2etest.ReadRequestLog(t, beta.reqLog))
			if got["b4"]["vm.boot"] == 0 || got["b1"]["vm.resize"] == 0 {
				return fmt.Errorf("applied so far: b4 %v, b1 %v", got["b4"], got["b1"])
			}
			return nil
		})
		w.startControlPlane()
		w.waitApplied(t, sha)
	}) {
		return
	}

	t.Run("nkudoctl reports the converged fleet", func(t *testing.T) {
		env := []string{"NKUDO_SERVER=" + w.url, "NKUDO_TOKEN=" + w.token, "NKUDO_CA_FILE=" + filepath.Join(w.dataDir, "pki", "ca.crt"),
			"NO_COLOR=1", "HOME=" + t.TempDir()}
		out := e2etest.Run(t, t.Context(), env, w.bins.Ctl, "status", w.head)
		for _, want := range []string{"nkudo/validate  success", "nkudo/plan      success", "nkudo/apply     success"} {
			if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
				t.Errorf("nkudoctl status %s lacks %q:\n%s", w.head[:12], want, out)
			}
		}
		out = e2etest.Run(t, t.Context(), env, w.bins.Ctl, "vms")
		for _, vm := range []string{"a1", "a2", "a3", "b1", "b2", "b3", "b4"} {
			found := false
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) >= 2 && f[1] == vm {
					found = true
					if f[len(f)-1] != "yes" {
						t.Errorf("nkudoctl vms: %s is not in sync: %q", vm, line)
					}
				}
			}
			if !found {
				t.Errorf("nkudoctl vms does not list %s:\n%s", vm, out)
			}
		}
	})

	t.Run("nothing was applied twice", func(t *testing.T) {
		want := map[string]map[string]map[string]int{
			"alpha": {
				"a1": {"vm.create": 1, "vm.boot": 1},
				"a2": {"vm.create": 1, "vm.boot": 1},
				"a3": {"vm.create": 1, "vm.boot": 1},
			},
			"beta": {
				"b1": {"vm.create": 1, "vm.boot": 1, "vm.resize": 1},
				"b2": {"vm.create": 1, "vm.boot": 1},
				"b3": {"vm.create": 1, "vm.boot": 1},
				"b4": {"vm.create": 1, "vm.boot": 1},
			},
		}
		for site, wantSite := range want {
			entries := e2etest.ReadRequestLog(t, w.agents[site].reqLog)
			got := e2etest.Applied(entries)
			if d := cmp.Diff(wantSite, got); d != "" {
				t.Errorf("site %s: operations applied at the hypervisor (-want +got):\n%s\nrequest log:\n%s",
					site, d, e2etest.FormatRequestLog(entries))
			}
		}
		// And the agents say so too: every VM is in sync with the last commit.
		for _, site := range []string{"alpha", "beta"} {
			v, err := w.client.SiteVMs(t.Context(), site)
			if err != nil {
				t.Fatal(err)
			}
			for _, vm := range v.VMs {
				if !vm.InSync || vm.Actual == nil || vm.Actual.State != model.VMRunning {
					t.Errorf("site %s vm %s: in sync %v, actual %+v", site, vm.Name, vm.InSync, vm.Actual)
				}
			}
			if len(v.VMs) != len(want[site]) {
				t.Errorf("site %s reports %d VMs, want %d", site, len(v.VMs), len(want[site]))
			}
		}
	})
}

// ---- control plane ----

func (w *world) bootstrap() {
	t := w.t
	w.dataDir = t.TempDir()
	w.token = e2etest.Bootstrap(t, w.bins.Nkudo, w.cpEnv(), e2eTenant, "e2e")
	w.listen = e2etest.FreeAddr(t)
	w.url = "https://" + w.listen
}

func (w *world) cpEnv() []string {
	return []string{
		"NKUDO_DATA_DIR=" + w.dataDir,
		"NKUDO_DATABASE_URL=" + w.dbURL,
		"NKUDO_ENROLL_PER_MINUTE=600",
		"NKUDO_ENROLL_BURST=50",
	}
}

// startControlPlane starts (or restarts, on the same port, database and
// data dir) `nkudo serve` and waits until it is ready.
func (w *world) startControlPlane() {
	t := w.t
	w.cp = e2etest.Start(t, e2etest.ProcConfig{
		Name: "nkudo", Bin: w.bins.Nkudo, LogDir: w.logDir, Env: w.cpEnv(),
		Args: []string{"serve", "--listen", w.listen, "--public-url", w.url, "--min-heartbeat-interval", "1s",
			"--shutdown-timeout", "5s", "--log-level", "debug",
			// The git server (http-backend) and the forge are on loopback.
			"--allow-local-sources", "--egress-allow", "127.0.0.0/8", "--egress-allow", "::1/128"},
	})
	w.pool = e2etest.WaitCA(t, w.cp, filepath.Join(w.dataDir, "pki", "ca.crt"), 30*time.Second)
	if w.client == nil {
		w.client, w.hc = e2etest.Clients(t, w.url, w.token, w.pool)
	}
	w.client.CloseIdleConnections()
	e2etest.WaitReady(t, w.cp, w.client, 30*time.Second)
}

// requireGitOps skips loudly while `nkudo serve` runs without the GitOps
// loop (its webhook endpoint then answers 501).
func (w *world) requireGitOps() {
	t := w.t
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, w.url+api.Path(api.PathWebhook, "no-such-repo"), strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		t.Fatalf("probe the webhook endpoint: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotImplemented {
		t.Skip("SKIP: the GitOps loop is not wired into `nkudo serve` (cmd/nkudo/gitops.go): POST /v1/webhooks/{repo} answers 501")
	}
}

func (w *world) registerRepo(url string) {
	t := w.t
	w.secret = "e2e-secret-" + hex.EncodeToString([]byte(t.Name()))[:16]
	r, err := w.client.CreateRepo(t.Context(), api.CreateRepoRequest{Name: "fleet", URL: url, Branch: "main", WebhookSecret: w.secret})
	if err != nil {
		t.Fatalf("register repository: %v", err)
	}
	w.repoID = r.ID
}

// ---- agents ----

func (w *world) enroll(site string) {
	t := w.t
	if _, err := w.client.CreateSite(t.Context(), site); err != nil {
		t.Fatalf("create site %s: %v", site, err)
	}
	tok, err := w.client.CreateEnrollmentToken(t.Context(), site, 10*time.Minute)
	if err != nil {
		t.Fatalf("enrollment token for %s: %v", site, err)
	}
	// Short: VMM sockets live under it and must fit 107 bytes.
	dir, err := os.MkdirTemp("", "e2e-"+site+"-")
	if err != nil {
		t.Fatal(err)
	}
	a := &agentProc{site: site, dir: dir, reqLog: filepath.Join(w.logDir, site+"-hypervisor.jsonl"), control: filepath.Join(dir, "faults.json")}
	w.agents[site] = a
	t.Cleanup(func() {
		// After the agent has stopped (cleanups run in reverse order):
		// end the VMMs, which outlive agents by design.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 20*time.Second)
		defer cancel()
		if failed := e2etest.ShutdownVMMs(ctx, dir); len(failed) > 0 {
			t.Errorf("VMMs of %s could not be stopped: %v", site, failed)
		}
		os.RemoveAll(dir)
	})
	e2etest.Run(t, t.Context(), nil, w.bins.Edge, "enroll", "--control-plane", w.url, "--token", tok.Token,
		"--ca-hash", tok.CAFingerprint, "--pki-dir", filepath.Join(dir, "pki"))
}

// startAgent starts (or restarts) a site's `nkudo-edge run`.
func (w *world) startAgent(site string) {
	a := w.agents[site]
	a.proc = e2etest.Start(w.t, e2etest.ProcConfig{
		Name: "nkudo-edge-" + site, Bin: w.bins.Edge, LogDir: w.logDir,
		Env: []string{"CHFAKE_REQUEST_LOG=" + a.reqLog, "CHFAKE_CONTROL=" + a.control},
		Args: []string{"run", "--pki-dir", filepath.Join(a.dir, "pki"), "--state-dir", a.dir,
			"--hypervisor", w.bins.CloudHypervisor, "--netbird", w.bins.NetBird, "--disable-networking",
			"--stop-timeout", "5s", "--poll-wait", "5s", "--log-level", "debug"},
	})
}

// ---- git, webhooks, statuses ----

// push commits the work tree, pushes it and delivers the signed webhook.
func (w *world) push(t *testing.T, msg string) string {
	t.Helper()
	before, after := w.work.CommitAndPush(t, msg)
	// The webhook handler learns of a new repository within a second; a
	// forge retries a 404 delivery the same way.
	e2etest.Eventually(t, t.Context(), 10*time.Second, "push webhook accepted", func(ctx context.Context) error {
		status, body, err := e2etest.DeliverGitHubPush(ctx, w.hc, w.url+api.Path(api.PathWebhook, w.repoID), w.secret, "",
			e2etest.PushEvent{Ref: "refs/heads/main", Before: before, After: after})
		switch {
		case err != nil:
			return err
		case status == http.StatusNotFound:
			return fmt.Errorf("HTTP %d %s", status, body)
		case status/100 != 2:
			t.Fatalf("deliver push webhook for %s: HTTP %d %s", after, status, body)
		}
		return nil
	})
	w.head = after
	return after
}

// waitApplied waits for nkudo/apply = success on sha; a failure state fails at once.
func (w *world) waitApplied(t *testing.T, sha string) {
	t.Helper()
	e2etest.Eventually(t, t.Context(), convergeTimeout, "nkudo/apply success on "+sha[:12], func(ctx context.Context) error {
		ss, err := w.client.CommitStatuses(ctx, w.repoID, sha)
		if err != nil {
			return err
		}
		var seen []string
		for _, s := range ss {
			seen = append(seen, s.Context+"="+s.State+" ("+s.Description+")")
			if s.State == "failure" || s.State == "error" {
				t.Fatalf("commit %s: %s is %s: %s", sha[:12], s.Context, s.State, s.Description)
			}
			if s.Context == "nkudo/apply" && s.State == "success" {
				return nil
			}
		}
		sort.Strings(seen)
		return fmt.Errorf("statuses: %s", strings.Join(seen, ", "))
	})
}

// waitActionRunning waits until the control plane has seen the site's
// action (of a plan for sha) start.
func (w *world) waitActionRunning(t *testing.T, sha, site string, op model.Operation, vm string) {
	t.Helper()
	e2etest.Eventually(t, t.Context(), convergeTimeout, fmt.Sprintf("%s %s %s running", site, op, vm), func(ctx context.Context) error {
		plans, err := w.client.ListPlans(ctx, api.PlanFilter{Site: site, Commit: sha})
		if err != nil {
			return err
		}
		for _, p := range plans {
			full, err := w.client.GetPlan(ctx, p.Plan.ID)
			if err != nil {
				return err
			}
			for _, a := range full.Actions {
				if a.Action.Operation == op && a.Action.VM == vm {
					if a.Status == model.ActionRunning {
						return nil
					}
					if a.Status != model.ActionPending {
						t.Fatalf("%s %s at %s is already %s: the scripted slowness did not hold it", op, vm, site, a.Status)
					}
				}
			}
		}
		return fmt.Errorf("%d plans for %s at %s, none with %s %s running", len(plans), sha[:12], site, op, vm)
	})
}

// ---- manifests and artifacts ----

func siteYAML(name string) []byte {
	return []byte(fmt.Sprintf("apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: %s\n  labels: {e2e: \"true\"}\nspec: {}\n", name))
}

func (w *world) vmYAML(name, site string, cpus, memMiB int) []byte {
	return []byte(fmt.Sprintf(`apiVersion: nkudo.io/v1alpha1
kind: VirtualMachine
metadata:
  name: %s
  site: %s
spec:
  state: Running
  cpus: %d
  maxCpus: 4
  memoryMiB: %d
  maxMemoryMiB: 1024
  image:
    url: %s
    sha256: %s
  kernel:
    url: %s
    sha256: %s
    cmdline: console=ttyS0
  networks:
    - bridge: br-e2e
`, name, site, cpus, memMiB, w.payloads["image"], w.digests["image"], w.payloads["kernel"], w.digests["kernel"]))
}

// startArtifacts serves the image and kernel the manifests name.
func (w *world) startArtifacts() {
	content := map[string][]byte{
		"/image.raw": []byte("n-kudo e2e root image\n"),
		"/vmlinux":   []byte("n-kudo e2e kernel\n"),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, ok := content[r.URL.Path]
		if !ok {
			http.NotFound(rw, r)
			return
		}
		rw.Write(b)
	}))
	w.t.Cleanup(srv.Close)
	w.payloads, w.digests = map[string]string{}, map[string]string{}
	for name, p := range map[string]string{"image": "/image.raw", "kernel": "/vmlinux"} {
		sum := sha256.Sum256(content[p])
		w.payloads[name] = srv.URL + p
		w.digests[name] = hex.EncodeToString(sum[:])
	}
}
