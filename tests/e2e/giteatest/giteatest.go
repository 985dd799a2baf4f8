// Package giteatest runs throw-away Gitea instances for the forge
// end-to-end suite: it builds Gitea once (or reuses the cached binary, see
// scripts/build-gitea.sh and tests/forge), starts it on a free loopback port
// with its own temp dir and SQLite database, bootstraps an admin user with
// an API token, and offers the few REST and git helpers the suite needs:
// repositories, webhooks, pushes over HTTP, pull requests and commit
// statuses, plus a recorder that receives webhook deliveries.
//
// Without a buildable Gitea the tests skip with the reason, unless
// NKUDO_E2E_GITEA=require, which turns the skip into a failure (CI).
// NKUDO_GITEA_BIN names a prebuilt binary to use instead of building.
package giteatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nkudo/nkudo/tests/e2e/e2etest"
)

// Environment variables read by the package.
const (
	// EnvMode set to "require" makes a missing Gitea fail the test instead
	// of skipping it.
	EnvMode = "NKUDO_E2E_GITEA"
	// EnvBin names a Gitea binary to use as is (no build).
	EnvBin = "NKUDO_GITEA_BIN"
)

// Admin credentials of every instance. The password only matters for git
// over HTTP without a token; the suite uses the token.
const (
	AdminUser     = "nkudo"
	adminPassword = "e2e-Passw0rd!"
	adminEmail    = "e2e@nkudo.invalid"
)

// Required reports whether a missing Gitea must fail the tests (CI).
func Required() bool { return os.Getenv(EnvMode) == "require" }

// SkipOrFail skips the test with reason, or fails it when Gitea is required.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s=require but: %s", EnvMode, reason)
	}
	t.Skipf("SKIP (set %s=require to fail instead): %s", EnvMode, reason)
}

// Binary is a Gitea build ready to run.
type Binary struct {
	// Path is the gitea executable.
	Path string
	// StaticRoot is Gitea's module directory: the binary is not a bindata
	// build, so translations and templates are served from there.
	StaticRoot string
	// Version is the output of `gitea --version`.
	Version string
}

// ErrNotBuilt is returned by FindBinary without build when the cache does
// not hold the pinned Gitea.
var ErrNotBuilt = errors.New("gitea is not built yet: run scripts/build-gitea.sh (a cold build takes minutes)")

// FindBinary returns the Gitea binary. When the cache does not hold the
// pinned version it builds it with scripts/build-gitea.sh if build is set
// (a cold build takes several minutes; ctx bounds it), or returns
// ErrNotBuilt.
func FindBinary(ctx context.Context, build bool) (Binary, error) {
	root, err := e2etest.ModuleRoot()
	if err != nil {
		return Binary{}, err
	}
	forge := filepath.Join(root, "tests", "forge")
	var b Binary
	if p := os.Getenv(EnvBin); p != "" {
		b.Path = p
	} else {
		script := filepath.Join(root, "scripts", "build-gitea.sh")
		args := []string{script}
		if !build {
			args = append(args, "--check")
		}
		cmd := exec.CommandContext(ctx, "bash", args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if !build && errors.As(err, &ee) && ee.ExitCode() == 3 {
				return Binary{}, ErrNotBuilt
			}
			return Binary{}, fmt.Errorf("%s: %w\n%s", script, err, lastLines(stderr.String(), 15))
		}
		b.Path = strings.TrimSpace(stdout.String())
	}
	out, err := exec.CommandContext(ctx, b.Path, "--version").Output()
	if err != nil {
		return Binary{}, fmt.Errorf("%s --version: %w", b.Path, err)
	}
	b.Version = strings.TrimSpace(string(out))
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "code.gitea.io/gitea")
	cmd.Dir = forge
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		return Binary{}, fmt.Errorf("locate Gitea's module directory (go list -m in %s): %w\n%s", forge, err, stderr.String())
	}
	b.StaticRoot = strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(b.StaticRoot, "options", "locale")); err != nil {
		return Binary{}, fmt.Errorf("gitea module directory %q has no options/locale: %w", b.StaticRoot, err)
	}
	return b, nil
}

// Instance is one running Gitea.
type Instance struct {
	// URL is the base URL, without a trailing slash: http://127.0.0.1:PORT.
	URL string
	// Token is an access token of AdminUser with every scope.
	Token string
	// Dir holds app.ini, the database, the repositories and gitea.log.
	Dir    string
	Binary Binary

	hc      *http.Client
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	logPath string
	seq     sync.Mutex
	n       int
}

var shared struct {
	mu   sync.Mutex
	once bool
	inst *Instance
	err  error
	// skip is set when Gitea could not be built (a reason to skip, not a failure).
	skip bool
	dir  string
}

// Start returns the test binary's Gitea, starting it on the first call
// (so one instance serves the whole test package). It skips the test when
// Gitea cannot be built (or fails it, see EnvMode) and fails it when a
// built Gitea does not start. Stop it with Close, or use Main in TestMain.
// If the test binary dies without Close, the kernel kills Gitea with it.
func Start(t testing.TB) *Instance {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.once {
		shared.once = true
		t.Log("starting the shared Gitea (building it first when the cache is cold: minutes)")
		// Not t.Context(): the instance outlives the test that started it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 20*time.Minute)
		defer cancel()
		sweepStale()
		b, err := FindBinary(ctx, Required() || roomForBuild(t))
		if errors.Is(err, ErrNotBuilt) {
			shared.skip, shared.err = true, fmt.Errorf("%w; the time left before this test binary's deadline is too short for it (use -timeout 30m)", err)
		} else if err != nil {
			shared.skip, shared.err = true, fmt.Errorf("gitea cannot be built: %w", err)
		} else {
			dir, err := os.MkdirTemp("", staleGlob[:len(staleGlob)-1])
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
			}
			if err != nil {
				shared.err = fmt.Errorf("gitea temp dir: %w", err)
			} else {
				shared.dir = dir
				shared.inst, shared.err = New(ctx, b, dir)
			}
		}
	}
	if shared.err != nil {
		if shared.skip {
			SkipOrFail(t, shared.err.Error())
		}
		t.Fatalf("start gitea: %v", shared.err)
	}
	return shared.inst
}

// staleGlob matches the directories of shared instances; each holds the
// PID of the test binary that owns it.
const staleGlob = "nkudo-gitea-*"

// sweepStale removes the directories of shared instances whose test
// binary died without Close (the kernel killed their Gitea with it).
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), staleGlob))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// roomForBuild reports whether a cold Gitea build (minutes) fits before the
// test binary's deadline (-timeout).
func roomForBuild(t testing.TB) bool {
	d, ok := t.(interface{ Deadline() (time.Time, bool) })
	if !ok {
		return true
	}
	deadline, set := d.Deadline()
	return !set || time.Until(deadline) > 15*time.Minute
}

// Close stops the shared instance (if any) and removes its directory.
func Close() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	var err error
	if shared.inst != nil {
		err = shared.inst.Stop()
		shared.inst = nil
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
		shared.dir = ""
	}
	return err
}

// Main runs the tests and then stops the shared instance:
// func TestMain(m *testing.M) { os.Exit(giteatest.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	if err := Close(); err != nil {
		fmt.Fprintln(os.Stderr, "giteatest:", err)
	}
	return code
}

var tokenRE = regexp.MustCompile(`Access token was successfully created\.\.\. ([0-9a-f]{40})`)

// New starts a Gitea from binary b in dir (which must exist and be
// writable): it writes app.ini, migrates the database, creates the admin
// user and its token, starts `gitea web` and waits for /api/healthz.
// The caller stops it with Stop.
func New(ctx context.Context, b Binary, dir string) (*Instance, error) {
	var lastErr error
	// A free port found by listening can be taken again before Gitea binds
	// it; retry on a fresh port rather than fail.
	for attempt := 0; attempt < 3; attempt++ {
		inst, err := start(ctx, b, dir, attempt)
		if err == nil {
			return inst, nil
		}
		lastErr = err
		if !errors.Is(err, errExitedEarly) {
			break
		}
	}
	return nil, lastErr
}

var errExitedEarly = errors.New("gitea exited before it was ready")

func start(ctx context.Context, b Binary, dir string, attempt int) (*Instance, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	ini, err := appINI(b, dir, port)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "app.ini")
	// app.ini must stay writable: Gitea stores generated secrets in it.
	if err := os.WriteFile(cfg, []byte(ini), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", cfg, err)
	}
	base := []string{"--config", cfg, "--work-path", dir}
	env := giteaEnv(dir)
	if attempt == 0 {
		if out, err := run(ctx, b.Path, env, append(base, "migrate")...); err != nil {
			return nil, fmt.Errorf("gitea migrate: %w\n%s", err, lastLines(out, 20))
		}
		out, err := run(ctx, b.Path, env, append(base, "admin", "user", "create",
			"--username", AdminUser, "--password", adminPassword, "--email", adminEmail,
			"--admin", "--must-change-password=false",
			"--access-token", "--access-token-name", "nkudo-e2e", "--access-token-scopes", "all")...)
		if err != nil {
			return nil, fmt.Errorf("gitea admin user create: %w\n%s", err, lastLines(out, 20))
		}
		m := tokenRE.FindStringSubmatch(out)
		if m == nil {
			return nil, fmt.Errorf("gitea admin user create printed no access token:\n%s", lastLines(out, 20))
		}
		if err := os.WriteFile(filepath.Join(dir, "token"), []byte(m[1]), 0o600); err != nil {
			return nil, fmt.Errorf("keep token: %w", err)
		}
	}
	token, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	inst := &Instance{
		URL:     fmt.Sprintf("http://127.0.0.1:%d", port),
		Token:   string(token),
		Dir:     dir,
		Binary:  b,
		hc:      &http.Client{Timeout: 30 * time.Second},
		done:    make(chan struct{}),
		logPath: filepath.Join(dir, "gitea.log"),
	}
	if err := inst.startWeb(append(base, "web"), env); err != nil {
		return nil, err
	}
	if err := inst.waitHealthy(ctx, 60*time.Second); err != nil {
		inst.Stop()
		return nil, err
	}
	return inst, nil
}

// startWeb starts `gitea web` from a goroutine locked to its OS thread: the
// parent-death signal is tied to the thread that forked, and a locked thread
// lives until the process has been waited for.
func (i *Instance) startWeb(args, env []string) error {
	logf, err := os.OpenFile(i.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("gitea log: %w", err)
	}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer logf.Close()
		cmd := exec.Command(i.Binary.Path, args...)
		cmd.Dir = i.Dir
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start gitea web: %w", err)
			close(i.done)
			return
		}
		i.cmd = cmd
		started <- nil
		i.waitErr = cmd.Wait()
		close(i.done)
	}()
	return <-started
}

func (i *Instance) waitHealthy(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		select {
		case <-i.done:
			return fmt.Errorf("%w (%v):\n%s", errExitedEarly, i.waitErr, i.LogTail(30))
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, i.URL+"/api/healthz", nil)
		if err != nil {
			return fmt.Errorf("healthz request: %w", err)
		}
		resp, err := i.hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /api/healthz: HTTP %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("gitea at %s not healthy within %s: %v\n%s", i.URL, timeout, last, i.LogTail(30))
		case <-tick.C:
		}
	}
}

// Stop ends Gitea (SIGTERM to its process group, SIGKILL after 10 s).
func (i *Instance) Stop() error {
	if i.cmd == nil {
		return nil
	}
	select {
	case <-i.done:
		return nil
	default:
	}
	pgid := i.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-i.done:
		return nil
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-i.done
		return errors.New("gitea did not stop within 10s of SIGTERM; killed")
	}
}

// LogTail returns the last n lines of Gitea's output.
func (i *Instance) LogTail(n int) string {
	b, err := os.ReadFile(i.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", i.logPath, err)
	}
	return lastLines(string(b), n)
}

// LogOnFailure prints the tail of Gitea's log at the end of a failed test.
func (i *Instance) LogOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- gitea log (%s), last 40 lines ----\n%s", i.logPath, i.LogTail(40))
		}
	})
}

func appINI(b Binary, dir string, port int) (string, error) {
	u, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("current user: %w", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", fmt.Errorf("secret key: %w", err)
	}
	r := strings.NewReplacer(
		"@DIR@", dir, "@PORT@", strconv.Itoa(port), "@STATIC@", b.StaticRoot,
		"@USER@", u.Username, "@SECRET@", hex.EncodeToString(secret),
	)
	return r.Replace(iniTemplate), nil
}

// iniTemplate: loopback only, no SSH, no mail, no Actions, no outside
// network; webhooks may target loopback (the receivers run on 127.0.0.1)
// and a control plane whose certificate comes from a throw-away CA.
const iniTemplate = `APP_NAME = n-kudo e2e
RUN_MODE = prod
RUN_USER = @USER@
WORK_PATH = @DIR@
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = @PORT@
DOMAIN = 127.0.0.1
ROOT_URL = http://127.0.0.1:@PORT@/
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
STATIC_ROOT_PATH = @STATIC@
APP_DATA_PATH = @DIR@/data

[database]
DB_TYPE = sqlite3
PATH = @DIR@/data/gitea.db

[repository]
ROOT = @DIR@/repositories
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = @SECRET@

[service]
DISABLE_REGISTRATION = true

[webhook]
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 10
; the control plane under test serves TLS with a throw-away CA
SKIP_TLS_VERIFY = true

[log]
MODE = console
LEVEL = Info
ROOT_PATH = @DIR@/log

[mailer]
ENABLED = false

[actions]
ENABLED = false

[packages]
ENABLED = false

[cron]
ENABLED = false

[cron.update_checker]
ENABLED = false
`

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// giteaEnv is the environment without git variables (a test run from a
// git hook must not leak GIT_DIR into Gitea) and with HOME inside dir.
func giteaEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GIT_") || strings.HasPrefix(kv, "GITEA_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+filepath.Join(dir, "home"))
}

func run(ctx context.Context, bin string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
