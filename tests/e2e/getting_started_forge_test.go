package e2e_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/tests/e2e/e2etest"
	"github.com/nkudo/nkudo/tests/e2e/giteatest"
)

// forgeRun is the state of the page's forge half: the control plane of
// sections 1 and 2 (on the page's PKI, started by the test where the page
// uses systemd), a real Gitea standing in for "GitHub or Gitea", an edge
// host staged in a directory, and what the reader learns on the way (the
// token, the repository ID, the enrollment token, the pull request).
type forgeRun struct {
	bins  e2etest.Binaries
	gitea *giteatest.Instance
	cp    *giteaCP
	repo  giteatest.Repo
	dir   string // the reader's clone of the repository: the commands' working directory
	edge  string // the edge host's root (install-edge.sh --root)
	etc   string // the control-plane host's /etc/nkudo
	// client is the API as the page's tenant acme, for the test's checks.
	client *api.Client
	env    []string
	logs   string

	images  map[string]string // file → sha256 of the reader's pushed images
	outputs []string          // of the current block's commands
	vars    map[string]string // placeholder → value learned so far
	headPR  string            // the pull request's head commit
}

// forgeRewrites maps the page's example names to the test's, in order
// (longest first where one contains another). A placeholder whose value
// is not known yet when a command uses it fails the test.
var forgeRewrites = []string{
	// The edge host: the release's installer and tarball, staged into a
	// directory instead of / (install-edge.sh --root: no root, no systemd).
	"./install-edge.sh --tarball nkudo-edge_VERSION_linux_amd64.tar.gz", "INSTALL_EDGE",
	// The control-plane host: its configuration directory, the tarball's
	// health-check.sh, the server certificate's name.
	"/etc/nkudo", "ETC_DIR",
	"./health-check.sh", "HEALTH_CHECK",
	"--host nkudo.example.com", "--host 127.0.0.1",
	// The test runs as one user: there is no nkudo system user to become.
	"sudo -u nkudo env", "env",
	"https://nkudo.example.com:8443", "CP_URL",
	"https://git.example.com", "GITEA_URL",
	"git.example.com", "GITEA_HOST",
	"acme/fleet", "GITEA_PROJECT",
	"--token nkudo_…", "--token API_TOKEN",
	"--token …", "--token ENROLL_TOKEN",
	"sha256:…", "CA_HASH",
	"logs PLAN", "logs PLAN_ID",
	"preview 7", "preview PR_NUMBER",
	"previews/7", "previews/PR_NUMBER",
	"REPO_ID", "REPO_ID",
}

// forgeVars are the names forgeRewrites' replacements use, filled in by
// the test's setup and forgeSteps.
var forgeVars = []string{"INSTALL_EDGE", "ETC_DIR", "HEALTH_CHECK", "CP_URL", "GITEA_URL", "GITEA_HOST", "GITEA_PROJECT", "API_TOKEN",
	"ENROLL_TOKEN", "CA_HASH", "PLAN_ID", "PR_NUMBER", "REPO_ID"}

// forgeSteps are what the reader does between the page's commands, by the
// name of the block they come before or after: edit files, paste the
// webhook into Gitea's form (here through Gitea's API), open a pull
// request. Each named block on the page must have an entry.
var forgeSteps = map[string]struct {
	before, after func(t *testing.T, f *forgeRun)
}{
	"install-pki": {after: func(t *testing.T, f *forgeRun) {
		// What the reader puts into /etc/nkudo/nkudo.env: the PKI settings
		// `pki init` printed and the secret key; then the service starts.
		env := []string{"NKUDO_SECRET_KEY_FILE=" + filepath.Join(f.etc, "secret.key")}
		for _, line := range strings.Split(f.outputs[0], "\n") {
			if m := regexp.MustCompile(`^([A-Z_]+_FILE)=(\S+)$`).FindStringSubmatch(line); m != nil {
				env = append(env, m[0])
			}
			if fp, ok := strings.CutPrefix(line, "# CA fingerprint: "); ok {
				f.vars["CA_HASH"] = fp
			}
		}
		if len(env) != 6 || f.vars["CA_HASH"] == "" {
			t.Fatalf("nkudo pki init did not print the four PKI files, the audit key and the CA fingerprint:\n%s", f.outputs[0])
		}
		f.cp = startGiteaCPEnv(t, f.bins, f.logs, env)
		f.vars["CP_URL"] = f.cp.URL
		// The service's settings, where the page's admin commands read them.
		conf := append([]string{"NKUDO_LISTEN=" + strings.TrimPrefix(f.cp.URL, "https://"),
			"NKUDO_PUBLIC_URL=" + f.cp.URL, "NKUDO_DATA_DIR=" + f.cp.DataDir}, env...)
		writeFile(t, filepath.Join(f.etc, "nkudo.env"), strings.Join(conf, "\n")+"\n")
	}},
	"tenant-on-host": {after: func(t *testing.T, f *forgeRun) {
		// The token is printed once: the reader copies it into the login.
		m := regexp.MustCompile(`(?m)^nkudo_\S+$`).FindString(f.outputs[1])
		if m == "" {
			t.Fatalf("nkudo admin token create printed no token:\n%s", f.outputs[1])
		}
		f.vars["API_TOKEN"] = m
		f.env = append(f.env, "NKUDO_TOKEN="+m)
		pool := x509.NewCertPool()
		ca, err := os.ReadFile(f.cp.CAFile)
		if err != nil || !pool.AppendCertsFromPEM(ca) {
			t.Fatalf("read the CA %s: %v", f.cp.CAFile, err)
		}
		f.client, _ = e2etest.Clients(t, f.cp.URL, m, pool)
	}},
	"health-check": {},
	"login":        {},
	"images-push": {before: func(t *testing.T, f *forgeRun) {
		// The reader's own kernel and disk image: the fake hypervisor checks
		// only that they exist.
		for _, name := range []string{"vmlinuz", "debian-12.raw"} {
			b := make([]byte, 1<<20)
			rand.Read(b)
			sum := sha256.Sum256(b)
			f.images[name] = hex.EncodeToString(sum[:])
			writeFile(t, filepath.Join(f.dir, name), string(b))
		}
		// Kept out of the repository, as a reader would.
		writeFile(t, filepath.Join(f.dir, ".git", "info", "exclude"), "vmlinuz\ndebian-12.raw\ntoken\nca.crt\n")
	}},
	"validate": {before: func(t *testing.T, f *forgeRun) {
		// The manifests, with the pushed images' url and sha256 pasted in.
		img := func(name string) string {
			return fmt.Sprintf("    url: %s/v1/agent/images/sha256/%s\n    sha256: %s\n", f.cp.URL, f.images[name], f.images[name])
		}
		writeFile(t, filepath.Join(f.dir, "sites", "store-042.yaml"),
			"apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: store-042\nspec: {}\n")
		writeFile(t, filepath.Join(f.dir, "vms", "store-042", "pos-1.yaml"),
			"apiVersion: nkudo.io/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: pos-1\n  site: store-042\nspec:\n"+
				"  state: Running\n  cpus: 2\n  maxCpus: 4\n  memoryMiB: 256\n  image:\n"+img("debian-12.raw")+"  kernel:\n"+img("vmlinuz"))
	}, after: func(t *testing.T, f *forgeRun) {
		f.git(t, "add", ".")
		f.git(t, "commit", "-qm", "store-042: the point of sale")
		f.git(t, "push", "-q", "origin", "HEAD:main")
	}},
	"credentials-gitea": {before: func(t *testing.T, f *forgeRun) {
		// The access token the reader created in Gitea's Settings > Applications.
		writeFile(t, filepath.Join(f.dir, "token"), f.gitea.Token+"\n")
	}},
	"repos-add-gitea": {after: func(t *testing.T, f *forgeRun) {
		out := strings.Join(f.outputs, "\n")
		id := field(t, out, "ID")
		hook, secret := field(t, out, "Webhook URL"), field(t, out, "Webhook secret")
		f.vars["REPO_ID"] = id
		// The reader pastes these into Settings > Webhooks > Add webhook >
		// Gitea; the test fills in the same form through Gitea's API.
		t.Logf("entering the webhook into Gitea (Settings > Webhooks > Add webhook > Gitea): %s, events push and pull_request", hook)
		f.gitea.CreateHook(t, f.repo, hook, secret, "push", "pull_request")
	}},
	"sites-token": {after: func(t *testing.T, f *forgeRun) {
		m := regexp.MustCompile(`--token (\S+)`).FindStringSubmatch(strings.Join(f.outputs, "\n"))
		if m == nil {
			t.Fatalf("nkudoctl sites token printed no enroll command with --token:\n%s", strings.Join(f.outputs, "\n"))
		}
		f.vars["ENROLL_TOKEN"] = m[1]
	}},
	"install-edge": {before: func(t *testing.T, f *forgeRun) {
		// The release the reader downloads: built from this tree.
		root, err := e2etest.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		rel, version := t.TempDir(), "v0.0.0-gettingstarted"
		cmd := exec.CommandContext(t.Context(), filepath.Join(root, "scripts", "release.sh"), version,
			"--edge-only", "--platforms", "linux/"+runtime.GOARCH, "--out", rel)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("scripts/release.sh: %v\n%s", err, out)
		}
		f.vars["INSTALL_EDGE"] = fmt.Sprintf("%s/install-edge.sh --root %s --tarball %s/nkudo-edge_%s_linux_%s.tar.gz",
			rel, f.edge, rel, version, runtime.GOARCH)
	}, after: func(t *testing.T, f *forgeRun) {
		// What the installed unit runs (deploy/systemd/nkudo-edge.service),
		// from the staged root, with the fake hypervisor instead of KVM.
		state := filepath.Join(f.edge, "var", "lib", "nkudo-edge")
		e2etest.Start(t, e2etest.ProcConfig{
			Name: "edge-store-042", Bin: filepath.Join(f.edge, "usr", "local", "bin", "nkudo-edge"), LogDir: f.logs,
			Args: []string{"run", "--hypervisor-fake", "--state-dir=" + state, "--pki-dir=" + filepath.Join(state, "pki"),
				"--poll-wait", "5s", "--stop-timeout", "2s"},
		})
		e2etest.Eventually(t, t.Context(), 60*time.Second, "the agent of store-042 reports", func(ctx context.Context) error {
			vms, err := f.client.SiteVMs(ctx, "store-042")
			if err != nil {
				return err
			}
			if !vms.Reported {
				return errors.New("no inventory reported yet")
			}
			return nil
		})
	}},
	"sites": {},
	"push": {before: func(t *testing.T, f *forgeRun) {
		editFile(t, filepath.Join(f.dir, "vms", "store-042", "pos-1.yaml"), "cpus: 2\n", "cpus: 4\n")
	}},
	"inspect": {before: func(t *testing.T, f *forgeRun) {
		plans, err := f.client.ListPlans(t.Context(), api.PlanFilter{})
		if err != nil || len(plans) == 0 {
			t.Fatalf("list plans after apply --wait: %v (%d plans)", err, len(plans))
		}
		f.vars["PLAN_ID"] = plans[0].Plan.ID
	}},
	"preview": {before: func(t *testing.T, f *forgeRun) {
		// The reader's pull request, opened in Gitea's UI (here its API).
		f.git(t, "checkout", "-qb", "pos-1-cpus")
		editFile(t, filepath.Join(f.dir, "vms", "store-042", "pos-1.yaml"), "cpus: 4\n", "cpus: 3\n")
		f.git(t, "commit", "-qam", "store-042: pos-1 with 3 CPUs")
		f.git(t, "push", "-q", "origin", "HEAD:pos-1-cpus")
		f.headPR = f.git(t, "rev-parse", "HEAD")
		pr := f.gitea.OpenPullRequest(t, f.repo, "pos-1-cpus", "main", "pos-1 with 3 CPUs")
		f.vars["PR_NUMBER"] = fmt.Sprint(pr.Number)
		c := waitStickyComment(t, f.gitea, f.repo, pr.Number, f.headPR)
		if !strings.Contains(c.Body, "resize pos-1") || !strings.Contains(c.Body, "cpus 4 → 3") {
			t.Errorf("the pull request's comment does not show pos-1's resize:\n%s", c.Body)
		}
	}, after: func(t *testing.T, f *forgeRun) {
		if out := f.outputs[0]; !strings.Contains(out, "resize pos-1") {
			t.Errorf("nkudoctl preview %s does not show pos-1's resize:\n%s", f.vars["PR_NUMBER"], out)
		}
	}},
	"preview-api": {before: func(t *testing.T, f *forgeRun) {
		copyFile(t, f.cp.CAFile, filepath.Join(f.dir, "ca.crt"))
	}, after: func(t *testing.T, f *forgeRun) {
		if out := strings.Join(f.outputs, "\n"); !strings.Contains(out, f.headPR) {
			t.Errorf("GET previews/%s does not name the head %s:\n%s", f.vars["PR_NUMBER"], f.headPR, out)
		}
	}},
	"destructive-label": {},
}

// forgeExit is the exit status the page documents for a command other than
// 0: `preview` exits 1 when the preview changes something.
var forgeExit = map[string]int{"nkudoctl preview 7": 1}

// runForgeHalf runs the page's blocks above its development section
// (blocks, in order) against a real Gitea and returns how many commands
// ran. The page's commands run rewritten by forgeRewrites, with forgeSteps
// between; the root and systemd parts of sections 1 and 2 (installing the
// binaries, starting the unit, the tenant and token) are the test's:
// after `nkudo pki init` it starts the control plane on that PKI and
// secret key, with the development opt-ins Gitea's plain-http loopback
// needs, and creates the tenant and its token.
func runForgeHalf(t *testing.T, bins e2etest.Binaries, blocks []pageBlock) int {
	if m := giteaMissing(); m != "" {
		giteatest.SkipOrFail(t, "n-kudo parts missing from the tree: "+m)
	}
	g := giteatest.Start(t)
	g.LogOnFailure(t)
	f := &forgeRun{bins: bins, gitea: g, logs: t.TempDir(), images: map[string]string{}, vars: map[string]string{}}
	f.etc = t.TempDir()
	var r giteatest.Repo
	// The page's repository is named fleet: `repos set fleet` uses the name.
	if err := g.Do(t.Context(), "POST", "/user/repos", map[string]any{"name": "fleet", "default_branch": "main"}, &r); err != nil {
		t.Fatalf("create the Gitea repository fleet: %v", err)
	}
	u, err := url.Parse(r.CloneURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(giteatest.AdminUser, g.Token)
	r.AuthURL = u.String()
	f.repo = r
	gu, err := url.Parse(g.URL)
	if err != nil {
		t.Fatal(err)
	}
	root, err := e2etest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	f.vars["HEALTH_CHECK"] = filepath.Join(root, "scripts", "health-check.sh")
	f.vars["ETC_DIR"], f.vars["GITEA_URL"], f.vars["GITEA_HOST"], f.vars["GITEA_PROJECT"] = f.etc, g.URL, gu.Host, r.FullName
	f.dir = e2etest.Clone(t, r.AuthURL).Dir
	// A short root: the VMs' API sockets live below it (108-byte limit).
	if f.edge, err = os.MkdirTemp("", "gse-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(f.edge) })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
		defer cancel()
		if failed := e2etest.ShutdownVMMs(ctx, f.edge); len(failed) > 0 {
			t.Errorf("VMMs left running: %s", strings.Join(failed, "; "))
		}
	})
	f.env = []string{
		"PATH=" + bins.Dir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + t.TempDir(), "NO_COLOR=1",
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=n-kudo getting started", "GIT_AUTHOR_EMAIL=gs@nkudo.invalid",
		"GIT_COMMITTER_NAME=n-kudo getting started", "GIT_COMMITTER_EMAIL=gs@nkudo.invalid",
	}

	ran := 0
	for _, b := range blocks {
		steps := forgeSteps[b.name]
		if steps.before != nil {
			steps.before(t, f)
		}
		f.outputs = f.outputs[:0]
		for _, c := range b.commands {
			want := forgeExit[c]
			c = f.rewrite(t, b, c)
			ran++
			f.outputs = append(f.outputs, runShellExit(t, f.env, f.dir, c, want))
		}
		if steps.after != nil {
			steps.after(t, f)
		}
	}

	// The push converged: pos-1 runs with 4 CPUs, in sync, and Gitea shows
	// nkudo/apply = success on the pushed commit.
	sites, err := f.client.SiteVMs(t.Context(), "store-042")
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(sites)
	if !strings.Contains(string(out), `"pos-1"`) || strings.Contains(string(out), `"inSync":false`) {
		t.Errorf("store-042 does not run pos-1 in sync after the page's apply --wait:\n%s", out)
	}
	main, err := g.BranchHead(t.Context(), r, "main")
	if err != nil {
		t.Fatal(err)
	}
	st, err := g.Statuses(t.Context(), r, main)
	if err != nil {
		t.Fatal(err)
	}
	if s := giteatest.Latest(st)["nkudo/apply"]; s.State != "success" {
		t.Errorf("Gitea shows nkudo/apply %q on %s, want success:\n%s", s.State, main, giteatest.FormatStatuses(st))
	}
	return ran
}

// rewrite replaces the page's example names in c (forgeRewrites).
func (f *forgeRun) rewrite(t *testing.T, b pageBlock, c string) string {
	t.Helper()
	for i := 0; i < len(forgeRewrites); i += 2 {
		from, to := forgeRewrites[i], forgeRewrites[i+1]
		if !strings.Contains(c, from) {
			continue
		}
		for _, name := range forgeVars {
			if !strings.Contains(to, name) {
				continue
			}
			v, ok := f.vars[name]
			if !ok {
				t.Fatalf("%s:%d: %q: the value of %s is not known yet", gettingStartedPage, b.line, c, name)
			}
			to = strings.ReplaceAll(to, name, v)
		}
		c = strings.ReplaceAll(c, from, to)
	}
	if strings.Contains(c, "…") {
		t.Fatalf("%s:%d: %q keeps a placeholder the test does not rewrite", gettingStartedPage, b.line, c)
	}
	return c
}

func (f *forgeRun) git(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "git", args...)
	cmd.Dir = f.dir
	cmd.Env = append(cleanEnv(), f.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// runShellExit is runShell for a command whose documented exit status is want.
func runShellExit(t *testing.T, env []string, dir, command string, want int) string {
	t.Helper()
	if want == 0 {
		return runShell(t, env, dir, command, false)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-ec", command)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != want {
		t.Fatalf("$ %s\nexit %v, want %d\n%s", command, err, want, out)
	}
	t.Logf("$ %s   (exit %d, as documented)\n%s", command, want, out)
	return string(out)
}

// field is the value of "NAME: value" in out.
func field(t *testing.T, out, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:\s+(\S+)\s*$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the output has no %q line:\n%s", name, out)
	}
	return m[1]
}

func waitStickyComment(t *testing.T, g *giteatest.Instance, r giteatest.Repo, number int64, sha string) giteatest.Comment {
	t.Helper()
	var got giteatest.Comment
	e2etest.Eventually(t, t.Context(), giteaStatusTimeout, "n-kudo's comment on the pull request for "+sha, func(ctx context.Context) error {
		all, err := g.Comments(ctx, r, number)
		if err != nil {
			return err
		}
		for _, c := range all {
			if strings.HasPrefix(c.Body, "<!-- nkudo:plan ") && strings.Contains(c.Body, sha) {
				got = c
				return nil
			}
		}
		return fmt.Errorf("%d comments, none from n-kudo for %s", len(all), sha)
	})
	return got
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func editFile(t *testing.T, path, from, to string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), from) {
		t.Fatalf("%s has no %q", path, from)
	}
	writeFile(t, path, strings.Replace(string(b), from, to, 1))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(b))
}
