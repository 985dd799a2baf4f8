package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/tests/e2e/e2etest"
)

// gettingStartedPage is the page TestGettingStarted runs.
const gettingStartedPage = "docs/getting-started.md"

// skippedOnPurpose names the blocks of the page that cannot run here, with
// why. The page marks each with `<!-- getting-started: skip NAME -->` on
// the line before its fence; a marker missing from this list, or a name
// here that the page no longer marks, fails the test, so a block is never
// skipped by accident.
var skippedOnPurpose = map[string]string{
	"install-tarball":    "installs a release tarball as root with systemd",
	"install-pki-owner":  "gives /etc/nkudo to the nkudo group, as root",
	"install-service":    "installs and starts a systemd unit",
	"install-container":  "needs docker",
	"credentials-github": "GitHub's form of credentials-gitea, which runs against Gitea",
	"repos-add-github":   "GitHub's form of repos-add-gitea, which runs against Gitea",
}

// pageBlock is one ```sh block of the page.
type pageBlock struct {
	line     int      // of the opening fence
	skip     string   // the skip marker's name; "" runs the block
	name     string   // a running block's marker name (steps before and after it)
	commands []string // continuation lines joined; a heredoc stays with its command
}

// blockMarker names the next block: "skip NAME" skips it, "NAME" runs it
// with the reader's steps of that name around it (forgeSteps).
var blockMarker = regexp.MustCompile(`^<!-- getting-started: (skip )?([a-z0-9-]+) -->$`)

// heredoc matches the start of a here-document and captures its delimiter.
var heredoc = regexp.MustCompile(`<<-?\s*'?([A-Za-z_]+)'?`)

// readPage splits the page into its shell blocks.
func readPage(t *testing.T, path string) []pageBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		blocks  []pageBlock
		cur     *pageBlock
		marker  string
		named   string
		cont    string
		hereEnd string
		n       int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			if line == "```sh" {
				blocks = append(blocks, pageBlock{line: n, skip: marker, name: named})
				cur = &blocks[len(blocks)-1]
			} else {
				// An output block: skip to its end.
				for sc.Scan() {
					n++
					if strings.HasPrefix(sc.Text(), "```") {
						break
					}
				}
			}
			marker, named = "", ""
		case cur == nil:
			if m := blockMarker.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
				if m[1] != "" {
					marker = m[2]
				} else {
					named = m[2]
				}
			} else if strings.TrimSpace(line) != "" {
				marker, named = "", ""
			}
		case hereEnd != "":
			last := len(cur.commands) - 1
			cur.commands[last] += "\n" + line
			if line == hereEnd {
				hereEnd = ""
			}
		case strings.HasPrefix(line, "```"):
			if cont != "" {
				t.Fatalf("%s:%d: the block ends inside a continued line", path, n)
			}
			cur = nil
		default:
			line = cont + strings.TrimSpace(line)
			if strings.HasSuffix(line, "\\") {
				cont = strings.TrimSpace(strings.TrimSuffix(line, "\\")) + " "
				continue
			}
			cont = ""
			if line == "" {
				continue
			}
			cur.commands = append(cur.commands, line)
			if m := heredoc.FindStringSubmatch(line); m != nil {
				hereEnd = m[1]
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil || hereEnd != "" {
		t.Fatalf("%s: a block or here-document is not closed", path)
	}
	return blocks
}

// assignment matches a command that sets a shell variable from its
// output (NAME=$(…)); the test carries the variable to later commands.
var assignment = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=`)

// TestGettingStarted runs the commands of docs/getting-started.md with the
// binaries built from this tree. The development section runs as written:
// `nkudo serve` on SQLite, `nkudo admin`, `nkudoctl login`, `sites token`,
// `images push`, `repos add` of a real local git repository, `nkudo-edge
// enroll` and `run --hypervisor-fake`, then `nkudoctl apply --wait` until
// the site has converged. Each command runs in `bash -c` in one working
// directory, as a reader pastes them into one shell: variables assigned
// with NAME=$(…) carry over, and a trailing & runs the command in the
// background for the rest of the test. The only rewrite there is the
// port: the page's 127.0.0.1:8443 becomes a free port, so runs can overlap.
// The forge half above it runs against a real Gitea in the subtest
// "forge" (runForgeHalf). Blocks that need root, systemd, docker or GitHub
// are marked on the page and skipped by name (skippedOnPurpose); every
// other shell block runs.
func TestGettingStarted(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: -short: TestGettingStarted builds and runs the real binaries")
	}
	if m := e2etest.MissingPackages(); len(m) > 0 {
		t.Skipf("SKIP: needs packages that are not in the tree yet: %s", strings.Join(m, ", "))
	}
	root, err := e2etest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	blocks := readPage(t, filepath.Join(root, gettingStartedPage))
	bins := e2etest.Build(t)

	work, home, logDir := t.TempDir(), t.TempDir(), t.TempDir()
	addr := e2etest.FreeAddr(t)
	env := []string{
		"PATH=" + bins.Dir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + home,
		"NO_COLOR=1",
		// Only the port changes: `nkudo serve` listens where the page's URLs now point.
		"NKUDO_LISTEN=" + addr,
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=n-kudo getting started", "GIT_AUTHOR_EMAIL=gs@nkudo.invalid",
		"GIT_COMMITTER_NAME=n-kudo getting started", "GIT_COMMITTER_EMAIL=gs@nkudo.invalid",
	}
	// VMs outlive their agent by design: shut the fake VMMs down at the end
	// (registered first, so it runs after the agent has stopped).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if failed := e2etest.ShutdownVMMs(ctx, work); len(failed) > 0 {
			t.Errorf("VMMs left running: %s", strings.Join(failed, "; "))
		}
	})

	ran, skipped, skippedCmds := 0, map[string]bool{}, 0
	var forgeHalf []pageBlock
	devLine := headingLine(t, filepath.Join(root, gettingStartedPage), devHeading)
	for _, b := range blocks {
		if b.name != "" {
			if _, ok := forgeSteps[b.name]; !ok || b.line > devLine {
				t.Fatalf("%s:%d: marker %q names no step of forgeSteps", gettingStartedPage, b.line, b.name)
			}
		}
		if b.skip == "" && b.line < devLine {
			forgeHalf = append(forgeHalf, b)
			continue
		}
		if b.skip != "" {
			if _, ok := skippedOnPurpose[b.skip]; !ok {
				t.Fatalf("%s:%d: skip marker %q is not in skippedOnPurpose", gettingStartedPage, b.line, b.skip)
			}
			if skipped[b.skip] {
				t.Fatalf("%s:%d: skip marker %q is used twice", gettingStartedPage, b.line, b.skip)
			}
			skipped[b.skip] = true
			skippedCmds += len(b.commands)
			t.Logf("skipped %s (line %d, %d commands): %s", b.skip, b.line, len(b.commands), skippedOnPurpose[b.skip])
			continue
		}
		for _, c := range b.commands {
			c = strings.ReplaceAll(c, "127.0.0.1:8443", addr)
			if strings.Contains(c, "…") {
				t.Fatalf("%s:%d: %q has a placeholder; a block that runs needs commands a reader can paste", gettingStartedPage, b.line, c)
			}
			ran++
			switch {
			case strings.HasSuffix(c, " &"):
				runBackground(t, bins, env, work, logDir, ran, strings.TrimSuffix(c, " &"))
			case assignment.MatchString(c):
				name := assignment.FindStringSubmatch(c)[1]
				out := runShell(t, env, work, c+"\nprintf %s \"$"+name+"\"", true)
				env = append(env, name+"="+out)
			default:
				runShell(t, env, work, c, false)
			}
		}
	}
	for name := range forgeSteps {
		if !slices.ContainsFunc(forgeHalf, func(b pageBlock) bool { return b.name == name }) {
			t.Errorf("forgeSteps has steps for %q, a block the page no longer marks", name)
		}
	}
	var unused []string
	for name := range skippedOnPurpose {
		if !skipped[name] {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("skippedOnPurpose names blocks the page no longer marks: %s", strings.Join(unused, ", "))
	}
	forgeRan := 0
	t.Run("forge", func(t *testing.T) { forgeRan = runForgeHalf(t, bins, forgeHalf) })
	if forgeRan == 0 {
		// Only without NKUDO_E2E_GITEA=require: say so in the summary.
		t.Logf("the forge half's %d blocks did not run: no Gitea (see the subtest forge)", len(forgeHalf))
	}
	t.Logf("ran %d commands; skipped %d blocks by name (%d commands) — of %s, %d of the commands against Gitea",
		ran+forgeRan, len(skipped), skippedCmds, gettingStartedPage, forgeRan)
	if ran < 15 {
		t.Errorf("ran only %d commands: the page's development loop is gone", ran)
	}

	// The fleet converged: every VM of the repository runs at its site as declared.
	vms := runShell(t, env, work, "nkudoctl vms -o json", true)
	var got []struct {
		Site string `json:"site"`
		VMs  []struct {
			Name   string `json:"name"`
			InSync bool   `json:"inSync"`
		} `json:"vms"`
	}
	if err := json.Unmarshal([]byte(vms), &got); err != nil {
		t.Fatalf("nkudoctl vms -o json: %v\n%s", err, vms)
	}
	n := 0
	for _, site := range got {
		for _, vm := range site.VMs {
			n++
			if !vm.InSync {
				t.Errorf("VM %s/%s is not in sync after the page's apply --wait", site.Site, vm.Name)
			}
		}
	}
	if n == 0 {
		t.Errorf("nkudoctl vms lists no VM after the page's apply --wait:\n%s", vms)
	}
}

// devHeading starts the page's local development section; the blocks
// above it are the forge half (runForgeHalf).
const devHeading = "## Develop against an agent on your machine"

// headingLine is the line number of heading in the page.
func headingLine(t *testing.T, path, heading string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(b), "\n") {
		if line == heading {
			return i + 1
		}
	}
	t.Fatalf("%s: no heading %q", path, heading)
	return 0
}

// runShell runs one command of the page in bash (with pipefail, as a
// careful reader's shell) in dir and returns its stdout (quiet) or its
// combined output. A non-zero exit fails the test with the output.
func runShell(t *testing.T, env []string, dir, command string, quiet bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-ec", command)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), env...)
	var out []byte
	var err error
	if quiet {
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if err != nil {
			t.Fatalf("$ %s\n%v\n%s%s", command, err, out, stderr.String())
		}
	} else {
		out, err = cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("$ %s\n%v\n%s", command, err, out)
		}
	}
	t.Logf("$ %s\n%s", command, out)
	return string(out)
}

// runBackground starts a command the page runs with & and keeps it
// running until the test ends. After `nkudo serve` it waits until the
// control plane answers, as a reader waits for its first log lines.
func runBackground(t *testing.T, bins e2etest.Binaries, env []string, dir, logDir string, n int, command string) {
	t.Helper()
	name := fmt.Sprintf("bg%d-%s", n, strings.Fields(command)[0])
	t.Logf("$ %s &   (log: %s)", command, filepath.Join(logDir, name+".log"))
	p := e2etest.Start(t, e2etest.ProcConfig{
		Name: name, Bin: "bash", Args: []string{"-c", "exec " + command},
		Env: append(cleanEnv(), env...), Dir: dir, LogDir: logDir,
	})
	f := strings.Fields(command)
	if len(f) < 2 || f[0] != "nkudo" || f[1] != "serve" {
		return
	}
	dataDir := ".nkudo"
	for i := range f[:len(f)-1] {
		if f[i] == "--data-dir" {
			dataDir = f[i+1]
		}
	}
	pool := e2etest.WaitCA(t, p, filepath.Join(dir, dataDir, "pki", "ca.crt"), 60*time.Second)
	var listen string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "NKUDO_LISTEN="); ok {
			listen = v
		}
	}
	c, _ := e2etest.Clients(t, "https://"+listen, "", pool)
	e2etest.WaitReady(t, p, c, 60*time.Second)
}

// cleanEnv is the test's environment without what would change the
// commands' behaviour or let them write outside the test's directories:
// the runner's HOME and XDG directories (nkudoctl's config file), git and
// n-kudo settings, and the control plane's PKI and database variables.
func cleanEnv() []string {
	drop := map[string]bool{"HOME": true, "PATH": true, "DATABASE_URL": true, "CA_CERT_FILE": true, "CA_KEY_FILE": true,
		"SERVER_CERT_FILE": true, "SERVER_KEY_FILE": true, "AUDIT_KEY_FILE": true, "REQUIRE_PERSISTENT_PKI": true}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if drop[k] || strings.HasPrefix(k, "GIT_") || strings.HasPrefix(k, "NKUDO_") || strings.HasPrefix(k, "XDG_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// TestReadPageMarkers: a skip marker skips the next block, a named marker
// names it, and either applies only to the block right after it.
func TestReadPageMarkers(t *testing.T) {
	page := filepath.Join(t.TempDir(), "page.md")
	text := "<!-- getting-started: skip host -->\n```sh\nsystemctl start x\n```\n\n" +
		"<!-- getting-started: push -->\n```sh\ngit push \\\n  origin main\n```\n\n" +
		"<!-- getting-started: stale -->\nA paragraph.\n\n```sh\necho plain\n```\n"
	if err := os.WriteFile(page, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	got := readPage(t, page)
	want := []pageBlock{
		{line: 2, skip: "host", commands: []string{"systemctl start x"}},
		{line: 7, name: "push", commands: []string{"git push origin main"}},
		{line: 15, commands: []string{"echo plain"}},
	}
	if len(got) != len(want) {
		t.Fatalf("readPage found %d blocks, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].line != want[i].line || got[i].skip != want[i].skip || got[i].name != want[i].name ||
			!slices.Equal(got[i].commands, want[i].commands) {
			t.Errorf("block %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
