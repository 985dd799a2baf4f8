package e2e_test

// The forge end-to-end suite: a real Gitea (tests/e2e/giteatest, one per
// test binary), a fresh Gitea repository per test, the real `nkudo` and
// `nkudo-edge` binaries, and the fake Cloud Hypervisor. Every commit status
// is read back through Gitea's own API, never from n-kudo's database.
//
// Without a buildable Gitea, or while a part of n-kudo the suite needs is
// missing, the tests skip and say which; NKUDO_E2E_GITEA=require turns
// every such skip into a failure (CI).
//
// Gitea is stopped by the package's TestMain when it calls giteatest.Close
// (giteatest.Main does); without one the kernel ends Gitea together with
// the test binary and the next run removes its directory.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/tests/e2e/e2etest"
	"github.com/nkudo/nkudo/tests/e2e/giteatest"
	"github.com/nkudo/nkudo/tests/fakes/chfake"
)

// Status contexts and the name of the tenant's credential holding the
// Gitea token.
const (
	giteaCtxValidate = "nkudo/validate"
	giteaCtxPlan     = "nkudo/plan"
	giteaCtxApply    = "nkudo/apply"
	giteaCredRef     = "gitea-token"
	giteaTenant      = "e2e"
)

// Deadlines: a status follows a push within seconds; apply waits for the
// agents' heartbeats and the control plane's apply check.
const (
	giteaStatusTimeout = 90 * time.Second
	giteaApplyTimeout  = 3 * time.Minute
)

// TestGiteaPushToApply: push manifests-example to a Gitea repository whose
// webhook (with a secret) points at n-kudo; the commit gets
// nkudo/validate, nkudo/plan and finally nkudo/apply = success once the
// three sites' agents converge, and every VM runs as desired.
func TestGiteaPushToApply(t *testing.T) {
	t.Parallel()
	e := newGiteaEnv(t)
	sites := giteaSites(t, giteaExampleDir(t))
	e.startAgents(t, sites...)
	repo, _ := e.newRepo(t, "")

	w := giteatest.Clone(t, repo)
	e.copyManifests(t, w, giteaExampleDir(t))
	sha := w.Commit(t, "add the example fleet")
	w.Push(t, "main")

	st := e.waitFinal(t, repo, sha, giteaCtxValidate)
	giteaWantState(t, st, "success")
	st = e.waitFinal(t, repo, sha, giteaCtxPlan)
	giteaWantState(t, st, "success")
	st = e.waitFinalApply(t, repo, sha)
	giteaWantState(t, st, "success")
	if !strings.HasPrefix(st.TargetURL, e.cp.URL+"/") {
		t.Errorf("%s target URL %q does not point at the control plane %s", st.Context, st.TargetURL, e.cp.URL)
	}
	// The summary the commit got when it was planned (a later reconcile of
	// the same commit may post another description).
	plan := giteaFirstFinal(e.statuses(t, repo, sha), giteaCtxPlan)
	giteaWantSummary(t, plan.Description, len(sites), map[string]int{"create": 10, "delete": 0})

	for _, site := range sites {
		e.waitInSync(t, site, sha)
	}
}

// TestGiteaPullRequestPreview: a pull request that resizes a VM and adds
// one gets nkudo/validate and nkudo/plan (with that summary) on its head
// and changes nothing at any site; once merged, the merge commit reaches
// nkudo/apply = success and the inventory shows the change.
func TestGiteaPullRequestPreview(t *testing.T) {
	t.Parallel()
	e := newGiteaEnv(t)
	e.startAgents(t, "store-042")
	repo, _ := e.newRepo(t, "")
	w := giteatest.Clone(t, repo)
	base := e.convergeStore042(t, w, repo)

	w.Checkout(t, "grow-store")
	w.Edit(t, "vms/store-042/nvr.yaml", func(s string) string { return strings.Replace(s, "  cpus: 2\n", "  cpus: 4\n", 1) })
	giteaAddVM(t, w, "vms/store-042/pos-2.yaml", "vms/store-042/pos-3.yaml", "pos-2", "pos-3")
	head := w.Commit(t, "store-042: more cameras and a third lane")
	w.Push(t, "grow-store")
	applied := e.baseline(t)
	pr := e.gitea.OpenPullRequest(t, repo, "grow-store", "main", "Grow store-042")
	if pr.Head.SHA != head {
		t.Fatalf("pull request head %s, want the pushed %s", pr.Head.SHA, head)
	}

	st := e.waitFinal(t, repo, head, giteaCtxValidate)
	giteaWantState(t, st, "success")
	st = e.waitFinal(t, repo, head, giteaCtxPlan)
	giteaWantState(t, st, "success")
	giteaWantSummary(t, st.Description, -1, map[string]int{"create": 1, "start": 1, "resize": 1, "delete": 0, "stop": 0})

	// Nothing is applied from a pull request: no apply status, no plan,
	// no hypervisor call, the desired commit unchanged.
	all := e.statuses(t, repo, head)
	if _, ok := giteatest.Latest(all)[giteaCtxApply]; ok {
		t.Errorf("pull request head got %s:\n%s", giteaCtxApply, giteatest.FormatStatuses(all))
	}
	if plans := e.plansFor(t, head); len(plans) != 0 {
		t.Errorf("%d plans stored for the pull request head, want none", len(plans))
	}
	if diff := cmp.Diff(applied, e.applied(t)); diff != "" {
		t.Errorf("the pull request changed the site (hypervisor calls -before +after):\n%s", diff)
	}
	if vms := e.siteVMs(t, "store-042"); vms.DesiredCommit != base {
		t.Errorf("desired commit of store-042 = %s after the pull request, want %s", vms.DesiredCommit, base)
	}

	merged := e.gitea.MergePullRequest(t, repo, pr.Number)
	st = e.waitFinalApply(t, repo, merged.MergeCommitSHA)
	giteaWantState(t, st, "success")
	vms := e.waitInSync(t, "store-042", merged.MergeCommitSHA)
	got := map[string]int{}
	for _, v := range vms.VMs {
		if v.Actual != nil {
			got[v.Name] = v.Actual.CPUs
		}
	}
	if got["nvr"] != 4 {
		t.Errorf("nvr has %d CPUs at the edge after the merge, want 4", got["nvr"])
	}
	if _, ok := got["pos-3"]; !ok {
		t.Errorf("pos-3 is not in store-042's inventory after the merge: %v", got)
	}
}

// TestGiteaInvalidCommit: a commit with an invalid manifest gets
// nkudo/validate = failure naming the file and line; no site changes and
// the last valid commit stays desired.
func TestGiteaInvalidCommit(t *testing.T) {
	t.Parallel()
	e := newGiteaEnv(t)
	e.startAgents(t, "store-042")
	repo, _ := e.newRepo(t, "")
	w := giteatest.Clone(t, repo)
	good := e.convergeStore042(t, w, repo)
	applied := e.baseline(t)

	// A valid VM with one field the schema does not know, right after "spec:".
	b, err := os.ReadFile(filepath.Join(w.Dir, "vms/store-042/inventory-sync.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	line := slices.Index(lines, "spec:")
	if line < 0 {
		t.Fatalf("inventory-sync.yaml has no \"spec:\" line")
	}
	lines = slices.Insert(lines, line+1, "  cpuz: 2")
	broken := strings.Replace(strings.Join(lines, "\n"), "name: inventory-sync\n", "name: broken\n", 1)
	w.Write(t, map[string][]byte{"vms/store-042/broken.yaml": []byte(broken)})
	where := fmt.Sprintf("vms/store-042/broken.yaml:%d", line+2)
	bad := w.Commit(t, "add a broken VM")
	w.Push(t, "main")

	st := e.waitFinal(t, repo, bad, giteaCtxValidate)
	giteaWantState(t, st, "failure")
	if !strings.Contains(st.Description, where) || !strings.Contains(st.Description, "cpuz") {
		t.Errorf("%s description %q does not name %s and the field cpuz", giteaCtxValidate, st.Description, where)
	}
	all := e.statuses(t, repo, bad)
	for _, s := range all {
		if s.Context != giteaCtxValidate && s.State == "success" {
			t.Errorf("invalid commit got %s = success:\n%s", s.Context, giteatest.FormatStatuses(all))
		}
	}
	if plans := e.plansFor(t, bad); len(plans) != 0 {
		t.Errorf("%d plans stored for the invalid commit, want none", len(plans))
	}
	if vms := e.siteVMs(t, "store-042"); vms.DesiredCommit != good {
		t.Errorf("desired commit of store-042 = %s after the invalid commit, want the last valid %s", vms.DesiredCommit, good)
	}
	if diff := cmp.Diff(applied, e.applied(t)); diff != "" {
		t.Errorf("the invalid commit changed the site (hypervisor calls -before +after):\n%s", diff)
	}
}

// TestGiteaPruneSafety: a commit deleting every VM of a protected site
// gets nkudo/plan = failure (prune safety) and nothing changes there.
func TestGiteaPruneSafety(t *testing.T) {
	t.Parallel()
	e := newGiteaEnv(t)
	e.startAgents(t, "store-042")
	repo, _ := e.newRepo(t, "")
	w := giteatest.Clone(t, repo)
	e.convergeStore042(t, w, repo)
	applied := e.baseline(t)
	vmsBefore := len(e.siteVMs(t, "store-042").VMs)

	entries, err := os.ReadDir(filepath.Join(w.Dir, "vms", "store-042"))
	if err != nil || len(entries) == 0 {
		t.Fatalf("read vms/store-042: %d entries, %v", len(entries), err)
	}
	rm := map[string][]byte{}
	for _, de := range entries {
		rm[filepath.Join("vms", "store-042", de.Name())] = nil
	}
	w.Write(t, rm)
	prune := w.Commit(t, "delete every VM of store-042")
	w.Push(t, "main")

	st := e.waitFinal(t, repo, prune, giteaCtxValidate)
	giteaWantState(t, st, "success")
	st = e.waitFinal(t, repo, prune, giteaCtxPlan)
	giteaWantState(t, st, "failure")
	if d := strings.ToLower(st.Description); !strings.Contains(d, "refused") && !strings.Contains(d, "prune") {
		t.Errorf("%s description %q does not say the prune was refused", giteaCtxPlan, st.Description)
	}
	if plans := e.plansFor(t, prune); len(plans) != 0 {
		t.Errorf("%d plans stored for the refused commit, want none", len(plans))
	}
	vms := e.siteVMs(t, "store-042")
	if len(vms.VMs) == 0 || len(vms.VMs) != vmsBefore {
		t.Errorf("store-042 lists %d VMs after the refused prune, %d before", len(vms.VMs), vmsBefore)
	}
	for _, v := range vms.VMs {
		if v.Actual == nil {
			t.Errorf("VM %s vanished from store-042 after the refused prune", v.Name)
		}
	}
	if diff := cmp.Diff(applied, e.applied(t)); diff != "" {
		t.Errorf("the refused prune changed the site (hypervisor calls -before +after):\n%s", diff)
	}
}

// TestGiteaWebhookAuth: deliveries with a wrong or missing signature are
// refused (and their delivery IDs are not burnt); a real delivery replayed
// byte for byte (same delivery ID) is acknowledged as a duplicate and
// reconciles nothing; nothing is planned or applied twice, and the next
// genuine push still goes through to apply.
func TestGiteaWebhookAuth(t *testing.T) {
	t.Parallel()
	e := newGiteaEnv(t)
	e.startAgents(t, "store-042")
	// Gitea delivers through a forwarding recorder, so the test holds the
	// exact bytes and delivery ID that n-kudo received.
	repo, reg := e.newRepo(t, "forward")
	w := giteatest.Clone(t, repo)
	first := e.convergeStore042(t, w, repo)
	real := e.fwd.Wait(t, giteaStatusTimeout, "for the push of "+first, func(d giteatest.Delivery) bool {
		return d.Event == "push" && bytes.Contains(d.Body, []byte(first))
	})
	if real.Answer/100 != 2 {
		t.Fatalf("n-kudo answered HTTP %d to the genuine delivery %s", real.Answer, real.ID)
	}
	applied := e.baseline(t)
	firstPlans := e.plansFor(t, first)
	if len(firstPlans) == 0 {
		t.Fatalf("no plan stored for the first commit %s", first)
	}

	tampered := bytes.ReplaceAll(real.Body, []byte(first), []byte(strings.Repeat("0", len(first))))
	if bytes.Equal(tampered, real.Body) {
		t.Fatal("could not tamper with the recorded delivery")
	}
	cases := []struct {
		name string
		body []byte
		sig  string // "" = no signature headers
	}{
		{"wrong-secret", real.Body, giteatest.Sign(real.Body, "not-the-secret")},
		{"tampered-body", tampered, real.Header.Get("X-Gitea-Signature")},
		{"unsigned", real.Body, ""},
	}
	for _, c := range cases {
		d := giteaRedeliver(real, "forged-"+c.name, c.body, c.sig)
		code, body, err := d.Replay(t.Context(), e.cp.hc, reg.WebhookURL)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if code != http.StatusUnauthorized && code != http.StatusForbidden {
			t.Errorf("%s: n-kudo answered HTTP %d (%s), want 401 or 403", c.name, code, body)
		}
	}
	// A refused delivery must not burn its ID: the same ID, now correctly
	// signed, is a new delivery. Its body differs from the genuine one (a
	// trailing space), since the genuine body again is a replay.
	fresh := append(bytes.Clone(real.Body), ' ')
	signed := giteaRedeliver(real, "forged-wrong-secret", fresh, giteatest.Sign(fresh, e.secret))
	if code, body, err := signed.Replay(t.Context(), e.cp.hc, reg.WebhookURL); err != nil || code != http.StatusAccepted {
		t.Errorf("correctly signed delivery reusing a refused ID: HTTP %d (%s), %v; want 202 accepted", code, body, err)
	}
	// The genuine body, correctly signed, under a new delivery ID: a
	// captured delivery replayed, dropped by its body.
	replayed := giteaRedeliver(real, "replayed-new-id", real.Body, giteatest.Sign(real.Body, e.secret))
	if code, body, err := replayed.Replay(t.Context(), e.cp.hc, reg.WebhookURL); err != nil || code/100 != 2 || !strings.Contains(body, "duplicate") {
		t.Errorf("genuine body under a new delivery ID: HTTP %d (%s), %v; want a 2xx answer saying duplicate", code, body, err)
	}

	// The genuine delivery again, byte for byte: a duplicate.
	code, body, err := real.Replay(t.Context(), e.cp.hc, reg.WebhookURL)
	if err != nil {
		t.Fatal(err)
	}
	if code/100 != 2 || !strings.Contains(body, "duplicate") {
		t.Errorf("replayed delivery %s: HTTP %d (%s), want a 2xx answer saying duplicate", real.ID, code, body)
	}

	// The next genuine push is the marker: once it is applied, whatever the
	// deliveries above could have caused has happened too.
	giteaAddVM(t, w, "vms/store-042/pos-2.yaml", "vms/store-042/pos-3.yaml", "pos-2", "pos-3")
	second := w.Commit(t, "store-042: a third lane")
	w.Push(t, "main")
	st := e.waitFinalApply(t, repo, second)
	giteaWantState(t, st, "success")
	e.waitInSync(t, "store-042", second)

	if got := e.plansFor(t, first); len(got) != len(firstPlans) {
		t.Errorf("plans of the first commit: %d after the forged and replayed deliveries, want %d", len(got), len(firstPlans))
	}
	if got := e.plansFor(t, second); len(got) != 1 {
		t.Errorf("plans of the second commit: %d, want 1", len(got))
	}
	delta := giteaDelta(applied, e.applied(t))
	want := map[string]map[string]int{"pos-3": {"vm.create": 1, "vm.boot": 1}}
	if diff := cmp.Diff(want, delta); diff != "" {
		t.Errorf("hypervisor calls since the first commit converged (-want +got):\n%s", diff)
	}
}

// giteaRedeliver copies a recorded delivery under a new delivery ID with
// body and signature replaced (sig "" drops every signature header).
func giteaRedeliver(d giteatest.Delivery, id string, body []byte, sig string) giteatest.Delivery {
	h := d.Header.Clone()
	for _, k := range []string{"X-Gitea-Delivery", "X-Gogs-Delivery", "X-GitHub-Delivery"} {
		h.Set(k, id)
	}
	for _, k := range []string{"X-Gitea-Signature", "X-Gogs-Signature", "X-Hub-Signature-256", "X-Hub-Signature"} {
		h.Del(k)
	}
	if sig != "" {
		h.Set("X-Gitea-Signature", sig)
		h.Set("X-Gogs-Signature", sig)
		h.Set("X-Hub-Signature-256", "sha256="+sig)
	}
	return giteatest.Delivery{Event: d.Event, ID: id, Header: h, Body: body}
}

// TestGiteaReconcileAgainKeepsStatuses: reconciling a commit again while
// its plans run (as a poll or a manual trigger does) must not change what
// the commit shows in Gitea: nkudo/plan keeps the summary it was planned
// with, and nkudo/apply turns success once, after every site converged.
func TestGiteaReconcileAgainKeepsStatuses(t *testing.T) {
	t.Parallel()
	// No polling: the one extra reconcile is the manual trigger below.
	e := newGiteaEnv(t, "--poll-interval=-1s")
	e.startAgents(t, "store-042")
	repo, reg := e.newRepo(t, "")
	w := giteatest.Clone(t, repo)
	// Slow boots keep the plan in progress for seconds.
	e2etest.SetFaults(t, e.control, chfake.Fault{Endpoint: "vm.boot", Delay: chfake.Duration(3 * time.Second)})
	sha := e.pushStore042(t, w)
	giteaWantState(t, e.waitFinal(t, repo, sha, giteaCtxPlan), "success")
	e2etest.Eventually(t, t.Context(), giteaStatusTimeout, "a plan of "+sha[:12]+" in progress", func(ctx context.Context) error {
		plans, err := e.cp.client.ListPlans(ctx, api.PlanFilter{Commit: sha, Status: string(model.PlanInProgress)})
		if err == nil && len(plans) == 0 {
			err = errors.New("no plan in progress")
		}
		return err
	})
	if _, err := e.cp.client.Reconcile(t.Context(), reg.ID, ""); err != nil {
		t.Fatalf("trigger a reconcile of %s again: %v", sha[:12], err)
	}
	e.waitFinalApply(t, repo, sha)
	e.waitInSync(t, "store-042", sha)
	e2etest.Eventually(t, t.Context(), giteaApplyTimeout, "every plan of "+sha[:12]+" succeeded", func(ctx context.Context) error {
		plans, err := e.cp.client.ListPlans(ctx, api.PlanFilter{Commit: sha})
		if err != nil {
			return err
		}
		for _, p := range plans {
			if p.Status != model.PlanSucceeded {
				return fmt.Errorf("plan %s of %s is %s", p.Plan.ID, p.Plan.Site, p.Status)
			}
		}
		return nil
	})
	giteaWantState(t, e.waitFinalApply(t, repo, sha), "success")

	all := e.statuses(t, repo, sha)
	first := giteaFirstFinal(all, giteaCtxPlan)
	applySuccess := -1
	for i, s := range all {
		switch {
		case s.Context == giteaCtxPlan && s.State != "pending" && s != first:
			t.Errorf("nkudo/plan changed from %s %q to %s %q when the commit was reconciled again", first.State, first.Description, s.State, s.Description)
		case s.Context == giteaCtxApply && applySuccess >= 0:
			t.Errorf("nkudo/apply = success (%q) was followed by nkudo/apply = %s (%q): the first success came before the site converged",
				all[applySuccess].Description, s.State, s.Description)
		case s.Context == giteaCtxApply && s.State == "success":
			applySuccess = i
		}
	}
	if t.Failed() {
		t.Logf("statuses of %s in Gitea:\n%s", sha[:12], giteatest.FormatStatuses(all))
	}
}

// ---- environment ----

// giteaEnv is one test's world: the shared Gitea, its own control plane
// and tenant, agents with the fake hypervisor, and an artifact server.
type giteaEnv struct {
	gitea     *giteatest.Instance
	bins      e2etest.Binaries
	cp        *giteaCP
	artifacts *giteaArtifacts
	reqLog    string
	control   string // the fake hypervisor's fault file (see e2etest.SetFaults)
	logDir    string
	secret    string
	fwd       *giteatest.Recorder // set by newRepo("forward")
}

var giteaPrereq struct {
	once   sync.Once
	reason string
}

// giteaMissing names the parts of n-kudo the suite needs that are not in
// the tree yet ("" when all are there).
func giteaMissing() string {
	giteaPrereq.once.Do(func() {
		var missing []string
		if m := e2etest.MissingPackages(); len(m) > 0 {
			missing = append(missing, "packages "+strings.Join(m, ", "))
		}
		root, err := e2etest.ModuleRoot()
		if err != nil {
			missing = append(missing, err.Error())
		} else if _, err := os.Stat(filepath.Join(root, "manifests-example")); err != nil {
			missing = append(missing, "manifests-example")
		}
		giteaPrereq.reason = strings.Join(missing, "; ")
	})
	return giteaPrereq.reason
}

// newGiteaEnv starts the test's control plane; serveArgs are added to
// `nkudo serve`.
func newGiteaEnv(t *testing.T, serveArgs ...string) *giteaEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIP: -short: the Gitea suite runs real processes for minutes")
	}
	if m := giteaMissing(); m != "" {
		giteatest.SkipOrFail(t, "n-kudo parts missing from the tree: "+m)
	}
	g := giteatest.Start(t)
	g.LogOnFailure(t)
	e := &giteaEnv{
		gitea:  g,
		bins:   e2etest.Build(t),
		logDir: t.TempDir(),
		secret: "e2e-webhook-secret-" + t.Name(),
	}
	e.reqLog = filepath.Join(e.logDir, "hypervisor-requests.jsonl")
	e.control = filepath.Join(e.logDir, "hypervisor-faults.json")
	e.artifacts = newGiteaArtifacts(t)
	e.cp = startGiteaCP(t, e.bins, e.logDir, serveArgs...)
	return e
}

// giteaCP is one control plane (`nkudo serve`, SQLite, dev PKI).
type giteaCP struct {
	URL     string
	DataDir string
	Token   string // the tenant's API token, as `nkudo admin token create` printed it
	CAFile  string
	client  *api.Client
	hc      *http.Client // trusts the control plane's CA
	proc    *e2etest.Proc
}

func startGiteaCP(t *testing.T, bins e2etest.Binaries, logDir string, serveArgs ...string) *giteaCP {
	t.Helper()
	return startGiteaCPEnv(t, bins, logDir, nil, serveArgs...)
}

// startGiteaCPEnv is startGiteaCP with extra environment for `nkudo serve`
// and `nkudo admin` (a persistent PKI: CA_CERT_FILE and the others).
func startGiteaCPEnv(t *testing.T, bins e2etest.Binaries, logDir string, extraEnv []string, serveArgs ...string) *giteaCP {
	t.Helper()
	ctx := t.Context()
	dataDir := t.TempDir()
	env := append([]string{"NKUDO_DATA_DIR=" + dataDir}, extraEnv...)
	e2etest.Run(t, ctx, env, bins.Nkudo, "admin", "tenant", "create", giteaTenant, "--data-dir", dataDir)
	// The token is the one line on stdout; logs go to stderr.
	cmd := exec.CommandContext(ctx, bins.Nkudo, "admin", "token", "create", "--tenant", giteaTenant, "--name", "gitea-e2e", "--data-dir", dataDir)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nkudo admin token create: %v\n%s", err, stderr.String())
	}
	token := strings.TrimSpace(string(out))
	if token == "" || strings.ContainsAny(token, " \n") {
		t.Fatalf("nkudo admin token create printed %q on stdout, want the token alone", out)
	}
	port := giteaFreePort(t)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	proc := e2etest.Start(t, e2etest.ProcConfig{
		Name: "nkudo", Bin: bins.Nkudo, LogDir: logDir, Env: env,
		Args: append([]string{"serve", "--data-dir", dataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
			"--public-url", url, "--min-heartbeat-interval", "1s", "--log-level", "debug",
			// Gitea (git and its status API) serves plain http on loopback:
			// the development opt-ins.
			"--allow-insecure-credentials",
			"--allow-local-sources", "--egress-allow", "127.0.0.0/8", "--egress-allow", "::1/128"}, serveArgs...),
	})
	caPath := filepath.Join(dataDir, "pki", "ca.crt")
	for _, kv := range extraEnv {
		if v, ok := strings.CutPrefix(kv, "CA_CERT_FILE="); ok {
			caPath = v
		}
	}
	var pool *x509.CertPool
	e2etest.Eventually(t, ctx, 30*time.Second, "nkudo serve writes its CA", func(context.Context) error {
		if done, err := proc.Exited(); done {
			return fmt.Errorf("nkudo serve exited: %v\n%s", err, e2etest.Tail(proc.LogPath, 20))
		}
		b, err := os.ReadFile(caPath)
		if err != nil {
			return err
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("%s holds no certificate yet", caPath)
		}
		return nil
	})
	client, err := api.NewClient(api.ClientConfig{BaseURL: url, Token: token, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.CloseIdleConnections)
	e2etest.Eventually(t, ctx, 30*time.Second, "nkudo serve is ready", func(ctx context.Context) error {
		if done, err := proc.Exited(); done {
			t.Fatalf("nkudo serve exited: %v\n%s", err, e2etest.Tail(proc.LogPath, 20))
		}
		return client.Health(ctx, true)
	})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	cp := &giteaCP{URL: url, DataDir: dataDir, Token: token, CAFile: caPath, client: client, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}, proc: proc}
	t.Cleanup(tr.CloseIdleConnections)
	cp.requireGitOps(t)
	return cp
}

// requireGitOps skips (or fails, see giteatest.EnvMode) when `nkudo serve`
// runs without the GitOps loop: its webhook endpoint then answers 501.
func (cp *giteaCP) requireGitOps(t *testing.T) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, cp.URL+api.Path(api.PathWebhook, "no-such-repo"), strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cp.hc.Do(req)
	if err != nil {
		t.Fatalf("probe the webhook endpoint: %v", err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotImplemented {
		giteatest.SkipOrFail(t, fmt.Sprintf("the GitOps loop (reconciler, webhooks, Gitea status writer) is not wired into `nkudo serve`"+
			" (cmd/nkudo/gitops.go): POST %s answers 501 %s", api.PathWebhook, strings.TrimSpace(string(b))))
	}
}

// newRepo creates a Gitea repository, registers it with n-kudo (Gitea
// status writer, token stored as the tenant's credential) and
// adds the webhook with the secret: pointing at n-kudo, or with mode
// "forward" at a recorder that forwards to n-kudo (e.fwd).
func (e *giteaEnv) newRepo(t *testing.T, mode string) (giteatest.Repo, api.Repository) {
	t.Helper()
	repo := e.gitea.CreateRepo(t)
	// One credential per host the token goes to: the API's, and the clone
	// URL's when Gitea names itself differently there.
	cloneRef := giteaCredRef
	for ref, raw := range map[string]string{giteaCredRef: e.gitea.URL, giteaCredRef + "-git": repo.CloneURL} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if ref != giteaCredRef {
			if au, _ := url.Parse(e.gitea.URL); au.Host == u.Host {
				continue
			}
			cloneRef = ref
		}
		if _, err := e.cp.client.PutCredential(t.Context(), ref, api.PutCredentialRequest{Kind: api.CredentialToken, Host: u.Host, Secret: e.gitea.Token}); err != nil {
			t.Fatalf("store the Gitea token as credential %s: %v", ref, err)
		}
	}
	reg, err := e.cp.client.CreateRepo(t.Context(), api.CreateRepoRequest{
		Name: repo.Name, URL: repo.CloneURL, Branch: "main", WebhookSecret: e.secret,
		CredentialsRef: cloneRef,
		ForgeKind:      "gitea", ForgeAPIURL: e.gitea.URL, ForgeProject: repo.FullName, ForgeCredentialsRef: giteaCredRef,
	})
	if err != nil {
		t.Fatalf("register %s with n-kudo: %v", repo.FullName, err)
	}
	if reg.WebhookURL == "" {
		t.Fatalf("n-kudo returned no webhook URL for repository %s", reg.ID)
	}
	target := reg.WebhookURL
	if mode == "forward" {
		e.fwd = giteatest.NewForwarder(t, reg.WebhookURL, e.cp.hc)
		target = e.fwd.URL
	}
	e.gitea.CreateHook(t, repo, target, e.secret, "push", "pull_request")
	return repo, reg
}

// startAgents creates each site, enrolls an agent for it and runs it with
// the fake hypervisor; it waits until every agent has reported.
func (e *giteaEnv) startAgents(t *testing.T, sites ...string) {
	t.Helper()
	ctx := t.Context()
	for _, site := range sites {
		if _, err := e.cp.client.CreateSite(ctx, site); err != nil && !errors.Is(err, api.ErrConflict) {
			t.Fatalf("create site %s: %v", site, err)
		}
		tok, err := e.cp.client.CreateEnrollmentToken(ctx, site, 0)
		if err != nil {
			t.Fatalf("enrollment token for %s: %v", site, err)
		}
		// A short directory: VM API sockets live below it (108-byte limit).
		dir, err := os.MkdirTemp("", "nkg-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		t.Cleanup(func() {
			c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
			defer cancel()
			for _, f := range e2etest.ShutdownVMMs(c, dir) {
				t.Logf("left a VMM running: %s", f)
			}
		})
		pkiDir, stateDir := filepath.Join(dir, "pki"), filepath.Join(dir, "s")
		e2etest.Run(t, ctx, nil, e.bins.Edge, "enroll", "--control-plane", e.cp.URL, "--token", tok.Token,
			"--ca-hash", tok.CAFingerprint, "--pki-dir", pkiDir)
		e2etest.Start(t, e2etest.ProcConfig{
			Name: "edge-" + site, Bin: e.bins.Edge, LogDir: e.logDir,
			Env: []string{"CHFAKE_REQUEST_LOG=" + e.reqLog, "CHFAKE_CONTROL=" + e.control, "NBFAKE_STATE_DIR=" + filepath.Join(dir, "nb")},
			Args: []string{"run", "--pki-dir", pkiDir, "--state-dir", stateDir, "--hypervisor", e.bins.CloudHypervisor,
				"--netbird", e.bins.NetBird, "--disable-networking", "--poll-wait", "5s", "--stop-timeout", "2s", "--log-level", "debug"},
		})
	}
	for _, site := range sites {
		e2etest.Eventually(t, ctx, 60*time.Second, "the agent of "+site+" reports", func(ctx context.Context) error {
			vms, err := e.cp.client.SiteVMs(ctx, site)
			if err != nil {
				return err
			}
			if !vms.Reported {
				return fmt.Errorf("site %s: no inventory reported yet", site)
			}
			return nil
		})
	}
}

// convergeStore042 pushes the store-042 part of manifests-example and
// waits for nkudo/apply = success; it returns the commit.
func (e *giteaEnv) convergeStore042(t *testing.T, w *giteatest.WorkTree, repo giteatest.Repo) string {
	t.Helper()
	sha := e.pushStore042(t, w)
	st := e.waitFinalApply(t, repo, sha)
	giteaWantState(t, st, "success")
	e.waitInSync(t, "store-042", sha)
	return sha
}

// pushStore042 commits and pushes the store-042 part of manifests-example.
func (e *giteaEnv) pushStore042(t *testing.T, w *giteatest.WorkTree) string {
	t.Helper()
	src := giteaExampleDir(t)
	tmp := t.TempDir()
	if err := os.CopyFS(filepath.Join(tmp, "vms", "store-042"), os.DirFS(filepath.Join(src, "vms", "store-042"))); err != nil {
		t.Fatalf("copy vms/store-042: %v", err)
	}
	site, err := os.ReadFile(filepath.Join(src, "sites", "store-042.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(tmp, "sites"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "sites", "store-042.yaml"), site, 0o644); err != nil {
		t.Fatal(err)
	}
	e.copyManifests(t, w, tmp)
	sha := w.Commit(t, "store-042")
	w.Push(t, "main")
	return sha
}

// copyManifests copies a manifest tree into the work tree with its
// artifact URLs pointed at the test's artifact server.
func (e *giteaEnv) copyManifests(t *testing.T, w *giteatest.WorkTree, src string) {
	t.Helper()
	w.CopyTree(t, src, "")
	e.artifacts.rewrite(t, w.Dir)
}

// ---- reading state back ----

func (e *giteaEnv) statuses(t *testing.T, repo giteatest.Repo, sha string) []giteatest.Status {
	t.Helper()
	all, err := e.gitea.Statuses(t.Context(), repo, sha)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// waitFinal waits until the newest status of context on sha is not pending.
func (e *giteaEnv) waitFinal(t *testing.T, repo giteatest.Repo, sha, name string) giteatest.Status {
	t.Helper()
	return e.waitStatus(t, repo, sha, name, giteaStatusTimeout)
}

func (e *giteaEnv) waitFinalApply(t *testing.T, repo giteatest.Repo, sha string) giteatest.Status {
	t.Helper()
	return e.waitStatus(t, repo, sha, giteaCtxApply, giteaApplyTimeout)
}

func (e *giteaEnv) waitStatus(t *testing.T, repo giteatest.Repo, sha, name string, timeout time.Duration) giteatest.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var all []giteatest.Status
	var last error
	for {
		all, last = e.gitea.Statuses(ctx, repo, sha)
		if last == nil {
			if s, ok := giteatest.Latest(all)[name]; ok && s.State != "pending" {
				return s
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s on %s: no final state within %s (last error: %v); statuses in Gitea:\n%s",
				name, sha[:12], timeout, last, giteatest.FormatStatuses(all))
		case <-tick.C:
		}
	}
}

func (e *giteaEnv) plansFor(t *testing.T, sha string) []api.Plan {
	t.Helper()
	plans, err := e.cp.client.ListPlans(t.Context(), api.PlanFilter{Commit: sha})
	if err != nil {
		t.Fatalf("list plans of %s: %v", sha, err)
	}
	return plans
}

func (e *giteaEnv) siteVMs(t *testing.T, site string) api.SiteVMs {
	t.Helper()
	vms, err := e.cp.client.SiteVMs(t.Context(), site)
	if err != nil {
		t.Fatalf("VMs of %s: %v", site, err)
	}
	return vms
}

// waitInSync waits until site's desired commit is sha and every VM of it
// is in sync at the edge.
func (e *giteaEnv) waitInSync(t *testing.T, site, sha string) api.SiteVMs {
	t.Helper()
	var vms api.SiteVMs
	e2etest.Eventually(t, t.Context(), giteaApplyTimeout, site+" in sync with "+sha[:12], func(ctx context.Context) error {
		var err error
		vms, err = e.cp.client.SiteVMs(ctx, site)
		if err != nil {
			return err
		}
		if vms.DesiredCommit != sha {
			return fmt.Errorf("desired commit %q", vms.DesiredCommit)
		}
		if len(vms.VMs) == 0 {
			return errors.New("no VMs")
		}
		for _, v := range vms.VMs {
			if !v.InSync {
				return fmt.Errorf("VM %s not in sync", v.Name)
			}
		}
		return nil
	})
	return vms
}

// baseline is applied(t) once store-042 has converged. It fails the test
// when nothing was recorded: an empty baseline would let every later
// "nothing changed at the hypervisor" check pass whatever happened.
func (e *giteaEnv) baseline(t *testing.T) map[string]map[string]int {
	t.Helper()
	a := e.applied(t)
	if len(a) == 0 {
		t.Fatalf("no hypervisor call recorded in %s after store-042 converged", e.reqLog)
	}
	return a
}

// applied counts the successful mutating hypervisor calls per VM so far.
func (e *giteaEnv) applied(t *testing.T) map[string]map[string]int {
	t.Helper()
	if _, err := os.Stat(e.reqLog); errors.Is(err, fs.ErrNotExist) {
		return map[string]map[string]int{}
	}
	return e2etest.Applied(e2etest.ReadRequestLog(t, e.reqLog))
}

// giteaFirstFinal is the oldest non-pending status of context name.
func giteaFirstFinal(all []giteatest.Status, name string) giteatest.Status {
	for _, s := range all {
		if s.Context == name && s.State != "pending" {
			return s
		}
	}
	return giteatest.Status{Context: name, State: "(none)"}
}

// giteaDelta is after minus before, keeping only what grew.
func giteaDelta(before, after map[string]map[string]int) map[string]map[string]int {
	out := map[string]map[string]int{}
	for vm, calls := range after {
		for ep, n := range calls {
			if d := n - before[vm][ep]; d != 0 {
				if out[vm] == nil {
					out[vm] = map[string]int{}
				}
				out[vm][ep] = d
			}
		}
	}
	return out
}

// ---- assertions ----

func giteaWantState(t *testing.T, s giteatest.Status, want string) {
	t.Helper()
	if s.State != want {
		t.Fatalf("%s = %s (%q), want %s", s.Context, s.State, s.Description, want)
	}
}

var giteaCountRE = regexp.MustCompile(`(\d+) (create|start|stop|delete|resize|replace)\b`)

// giteaWantSummary checks a plan summary ("3 sites: 2 create, 1 start"):
// sites is the leading site count (-1: any); counts gives the number
// expected for each named operation (0: absent).
func giteaWantSummary(t *testing.T, summary string, sites int, counts map[string]int) {
	t.Helper()
	if sites >= 0 && !strings.HasPrefix(summary, fmt.Sprintf("%d site", sites)) {
		t.Errorf("plan summary %q does not start with %d site(s)", summary, sites)
	}
	got := map[string]int{}
	for _, m := range giteaCountRE.FindAllStringSubmatch(summary, -1) {
		var n int
		fmt.Sscan(m[1], &n)
		got[m[2]] += n
	}
	for op, want := range counts {
		if got[op] != want {
			t.Errorf("plan summary %q: %d %s, want %d", summary, got[op], op, want)
		}
	}
}

// ---- manifests ----

func giteaExampleDir(t *testing.T) string {
	t.Helper()
	root, err := e2etest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "manifests-example")
}

var giteaSiteRE = regexp.MustCompile(`(?m)^kind: Site\s*\nmetadata:\s*\n\s+name: ([a-z0-9-]+)`)

// giteaSites lists the Site names defined under dir.
func giteaSites(t *testing.T, dir string) []string {
	t.Helper()
	var sites []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range giteaSiteRE.FindAllSubmatch(b, -1) {
			sites = append(sites, string(m[1]))
		}
		return nil
	})
	if err != nil || len(sites) == 0 {
		t.Fatalf("sites of %s: %v (found %d)", dir, err, len(sites))
	}
	sort.Strings(sites)
	return sites
}

var giteaMACRE = regexp.MustCompile(`mac: "?52:54:00:([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})"?`)

// giteaAddVM adds a VM copied from an existing file under a new name (and
// a new MAC address, which must stay unique).
func giteaAddVM(t *testing.T, w *giteatest.WorkTree, from, to, oldName, newName string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(w.Dir, from))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "name: "+oldName+"\n", "name: "+newName+"\n", 1)
	if s == string(b) {
		t.Fatalf("%s has no \"name: %s\"", from, oldName)
	}
	s = strings.ReplaceAll(s, "hostname: "+oldName, "hostname: "+newName)
	s = giteaMACRE.ReplaceAllString(s, `mac: "52:54:00:e2:e2:99"`)
	w.Write(t, map[string][]byte{to: []byte(s)})
}

// ---- artifacts ----

// giteaArtifacts serves stand-ins for the images, kernels and firmware the
// example manifests reference (a placeholder mirror with illustrative
// digests): the manifests are rewritten to this server and to the digests
// of what it serves, so the agent downloads and verifies for real.
type giteaArtifacts struct {
	url   string
	mu    sync.Mutex
	files map[string][]byte
}

func newGiteaArtifacts(t *testing.T) *giteaArtifacts {
	a := &giteaArtifacts{files: map[string][]byte{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		b, ok := a.files[r.URL.Path]
		a.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

var giteaArtifactRE = regexp.MustCompile(`(url:\s*)https?://[^/\s]+(/\S+)(\s*\n\s*sha256:\s*)"?[0-9a-f]{64}"?`)

// rewrite points every url+sha256 pair of the YAML files under dir at the
// server.
func (a *giteaArtifacts) rewrite(t *testing.T, dir string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out := giteaArtifactRE.ReplaceAllFunc(b, func(m []byte) []byte {
			sub := giteaArtifactRE.FindSubmatch(m)
			path := string(sub[2])
			content := []byte("n-kudo e2e stand-in for " + path + "\n")
			a.mu.Lock()
			a.files[path] = content
			a.mu.Unlock()
			sum := sha256.Sum256(content)
			n++
			return []byte(string(sub[1]) + a.url + path + string(sub[3]) + hex.EncodeToString(sum[:]))
		})
		if bytes.Equal(out, b) {
			return nil
		}
		return os.WriteFile(p, out, 0o644)
	})
	if err != nil {
		t.Fatalf("rewrite artifacts under %s: %v", dir, err)
	}
	if n == 0 {
		t.Fatalf("no artifact URLs found under %s", dir)
	}
}

// ---- small helpers ----

func giteaFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestGiteaPRStickyComment: opening a pull request gets one n-kudo comment
// with the plan of its head; a later push edits that same comment to the
// new head's plan (the pull request still has exactly one n-kudo comment);
// an invalid push shows its errors as file:line linked into the head;
// closing the pull request edits the comment once more to say so.
func TestGiteaPRStickyComment(t *testing.T) {
	t.Parallel()
	e := newGiteaEnv(t)
	e.startAgents(t, "store-042")
	repo, _ := e.newRepo(t, "")
	w := giteatest.Clone(t, repo)
	e.convergeStore042(t, w, repo)

	w.Checkout(t, "grow-nvr")
	w.Edit(t, "vms/store-042/nvr.yaml", func(s string) string { return strings.Replace(s, "  cpus: 2\n", "  cpus: 4\n", 1) })
	h1 := w.Commit(t, "store-042: a bigger nvr")
	w.Push(t, "grow-nvr")
	pr := e.gitea.OpenPullRequest(t, repo, "grow-nvr", "main", "Grow the nvr")

	first := e.waitPlanComment(t, repo, pr.Number, h1)
	if !strings.Contains(first.Body, "`store-042`") || !strings.Contains(first.Body, "resize nvr") || !strings.Contains(first.Body, "cpus 2 → 4") {
		t.Errorf("the comment does not show the plan of store-042:\n%s", first.Body)
	}
	if !strings.Contains(first.Body, "`store-042` v") {
		t.Errorf("the comment does not name the inventory version it was computed against:\n%s", first.Body)
	}

	giteaAddVM(t, w, "vms/store-042/pos-2.yaml", "vms/store-042/pos-3.yaml", "pos-2", "pos-3")
	h2 := w.Commit(t, "store-042: a third lane")
	w.Push(t, "grow-nvr")
	second := e.waitPlanComment(t, repo, pr.Number, h2)
	if second.ID != first.ID {
		t.Errorf("the second push got comment %d, want comment %d edited", second.ID, first.ID)
	}
	if !strings.Contains(second.Body, "create pos-3") {
		t.Errorf("the edited comment does not show the new VM:\n%s", second.Body)
	}

	// Invalid: the errors, each as file:line linked to the line in the head.
	w.Edit(t, "vms/store-042/nvr.yaml", func(s string) string { return strings.Replace(s, "  cpus: 4\n", "  cpus: 0\n", 1) })
	h3 := w.Commit(t, "store-042: no cpus")
	w.Push(t, "grow-nvr")
	third := e.waitPlanComment(t, repo, pr.Number, h3)
	if third.ID != first.ID {
		t.Errorf("the invalid push got comment %d, want comment %d edited", third.ID, first.ID)
	}
	loc := regexp.MustCompile(`\[vms/store-042/nvr\.yaml:(\d+)\]\((\S+)\)`).FindStringSubmatch(third.Body)
	if loc == nil || !strings.Contains(loc[2], "/src/commit/"+h3+"/vms/store-042/nvr.yaml#L"+loc[1]) || !strings.Contains(third.Body, "cpus") {
		t.Errorf("the invalid head's comment does not link the error's file:line into the head:\n%s", third.Body)
	}

	// Closed: the same comment is edited to say so.
	e.gitea.ClosePullRequest(t, repo, pr.Number)
	closed := e.waitPlanComment(t, repo, pr.Number, "was closed")
	if closed.ID != first.ID {
		t.Errorf("the close got comment %d, want comment %d edited", closed.ID, first.ID)
	}
}

// TestGiteaDestructiveLabelGate: a pull request that deletes a VM fails
// nkudo/plan until the label nkudo/destructive-ok is added; adding it
// (Gitea's label_updated delivery) turns nkudo/plan to success.
func TestGiteaDestructiveLabelGate(t *testing.T) {
	t.Parallel()
	e := newGiteaEnv(t)
	e.startAgents(t, "store-042")
	repo, _ := e.newRepo(t, "")
	w := giteatest.Clone(t, repo)
	e.convergeStore042(t, w, repo)

	w.Checkout(t, "drop-lane")
	if err := os.Remove(filepath.Join(w.Dir, "vms", "store-042", "pos-2.yaml")); err != nil {
		t.Fatal(err)
	}
	head := w.Commit(t, "store-042: drop the second lane")
	w.Push(t, "drop-lane")
	pr := e.gitea.OpenPullRequest(t, repo, "drop-lane", "main", "Drop pos-2")

	st := e.waitFinal(t, repo, head, giteaCtxPlan)
	giteaWantState(t, st, "failure")
	if want := "1 destructive action: add the label `nkudo/destructive-ok` to accept"; st.Description != want {
		t.Errorf("nkudo/plan of the unlabelled pull request says %q, want %q", st.Description, want)
	}

	e.gitea.AddLabel(t, repo, pr.Number, "nkudo/destructive-ok")
	ctx, cancel := context.WithTimeout(t.Context(), giteaStatusTimeout)
	defer cancel()
	for {
		all, err := e.gitea.Statuses(ctx, repo, head)
		if s, ok := giteatest.Latest(all)[giteaCtxPlan]; err == nil && ok && s.State == "success" {
			if !strings.Contains(s.Description, "accepted by label nkudo/destructive-ok") {
				t.Errorf("nkudo/plan after the label: %q", s.Description)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("nkudo/plan did not turn success after the label was added; statuses:\n%s", giteatest.FormatStatuses(all))
		case <-time.After(250 * time.Millisecond):
		}
	}
	if plans := e.plansFor(t, head); len(plans) != 0 {
		t.Errorf("%d plans stored for the pull request head, want none", len(plans))
	}
}

// waitPlanComment waits until pull request number has exactly one n-kudo
// plan comment and it contains text (a commit hash, a phrase), and returns it.
func (e *giteaEnv) waitPlanComment(t *testing.T, repo giteatest.Repo, number int64, sha string) giteatest.Comment {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), giteaStatusTimeout)
	defer cancel()
	var ours []giteatest.Comment
	var last error
	for {
		all, err := e.gitea.Comments(ctx, repo, number)
		last = err
		ours = ours[:0]
		for _, c := range all {
			if strings.HasPrefix(c.Body, "<!-- nkudo:plan ") {
				ours = append(ours, c)
			}
		}
		if len(ours) > 1 {
			t.Fatalf("pull request #%d has %d n-kudo comments, want one", number, len(ours))
		}
		if len(ours) == 1 && strings.Contains(ours[0].Body, sha) {
			return ours[0]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no n-kudo comment for %s on pull request #%d (last error %v); comments: %+v", sha, number, last, ours)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
