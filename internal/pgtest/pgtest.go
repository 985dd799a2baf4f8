// Package pgtest gives tests a throw-away PostgreSQL: one cluster per test
// binary, created with initdb in a temp dir and served on a free 127.0.0.1
// port, and a fresh, empty database for every URL call.
//
// Use it as
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//	func TestX(t *testing.T) { url := pgtest.URL(t); … }
//
// or, in a TestMain that has more to clean up, call Close after m.Run:
//
//	code := m.Run(); pgtest.Close(); os.Exit(code)
//
// Main (or Close) stops the cluster and removes its directory; the
// server also runs as a child that receives SIGQUIT if the test binary dies,
// so a cluster never outlives its tests (that is why the server is started
// directly rather than daemonised by pg_ctl).
//
// initdb and postgres refuse to run as root, so as root they run as the
// "postgres" OS user in a directory chowned to it. The cluster runs with
// fsync=off, synchronous_commit=off and full_page_writes=off: test data is
// disposable, and benchmarks against it measure the code, not the disk.
//
// Environment:
//   - NKUDO_TEST_DATABASE_URL: use this server instead (databases are created
//     and dropped on it; the URL's user needs CREATEDB).
//   - NKUDO_TEST_POSTGRES=require: missing binaries fail the test instead of
//     skipping it (CI sets this).
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// cluster is the one server of this test binary.
type cluster struct {
	admin string // URL of a database to run CREATE DATABASE in
	dir   string // "" when the server is external
	cmd   *exec.Cmd
	// exited receives cmd.Wait's result once the server exits.
	exited chan error
	log    string
}

// The per-binary cluster: started at the first URL call, stopped by Main
// or Close. This is the package's only state, and it is what "once per
// test binary" means.
var (
	mu      sync.Mutex
	started bool
	current *cluster
	errc    error
)

// Main runs the package's tests, then stops the cluster if one was started,
// and exits with the tests' code.
func Main(m *testing.M) {
	code := m.Run()
	if err := Close(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
	}
	os.Exit(code)
}

// Close stops the cluster, if one was started, and removes its directory.
// It is safe to call more than once; a later URL starts a new cluster. It
// has the func() error shape that TestMain helpers take as closers.
func Close() error {
	mu.Lock()
	c := current
	started, current, errc = false, nil, nil
	mu.Unlock()
	if c == nil {
		return nil
	}
	return c.stop()
}

// get starts the cluster on first use.
func get(ctx context.Context) (*cluster, error) {
	mu.Lock()
	defer mu.Unlock()
	if !started {
		started = true
		current, errc = start(ctx)
	}
	return current, errc
}

// URL returns the URL of a new, empty database that is dropped when t ends.
// It skips t (loudly) when no PostgreSQL is available, unless
// NKUDO_TEST_POSTGRES=require.
func URL(t testing.TB) string {
	t.Helper()
	c, errc := get(context.WithoutCancel(t.Context()))
	if errc != nil {
		if errors.Is(errc, errNoBinaries) && os.Getenv("NKUDO_TEST_POSTGRES") != "require" {
			t.Skipf("SKIP (no PostgreSQL): %v. Install PostgreSQL server binaries, or set NKUDO_TEST_DATABASE_URL; "+
				"NKUDO_TEST_POSTGRES=require turns this skip into a failure", errc)
		}
		t.Fatalf("pgtest: %v", errc)
	}
	name := "nkudo_test_" + randomHex(6)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := exec1(ctx, c.admin, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
		defer cancel()
		if err := exec1(ctx, c.admin, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(c.admin)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

var errNoBinaries = errors.New("initdb and postgres not found in PATH or /usr/lib/postgresql/*/bin")

func exec1(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// binDir finds the directory holding initdb and postgres.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Sort(sort.Reverse(sort.StringSlice(dirs))) // newest major first (for single digits, close enough)
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errNoBinaries
}

func start(ctx context.Context) (*cluster, error) {
	if u := os.Getenv("NKUDO_TEST_DATABASE_URL"); u != "" {
		return &cluster{admin: u}, nil
	}
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tempParent(), "nkudo-pgtest-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, log: filepath.Join(dir, "postgres.log")}
	cred, err := runAs(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logf, err := os.Create(c.log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logf.Close()
	c.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-h", "127.0.0.1", "-k", dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=300",
		"-c", "shared_buffers=64MB")
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c.admin = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	c.exited = make(chan error, 1)
	go func() { c.exited <- c.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := exec1(pctx, c.admin, "SELECT 1")
		cancel()
		if err == nil {
			return c, nil
		}
		select {
		case werr := <-c.exited:
			c.cmd = nil
			logText, _ := os.ReadFile(c.log)
			os.RemoveAll(dir)
			return nil, fmt.Errorf("postgres exited during start-up (%v):\n%s", werr, tail(logText))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			logText, _ := os.ReadFile(c.log)
			c.stop()
			return nil, fmt.Errorf("postgres did not accept connections within 60s: %v\n%s", err, tail(logText))
		}
	}
}

func tail(b []byte) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// runAs returns the credentials to run PostgreSQL with: none for a normal
// user, the "postgres" user (owning dir) for root.
func runAs(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a \"postgres\" OS user to run the server as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("chown %s: %w", dir, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *cluster) stop() error {
	if c.cmd != nil {
		_ = c.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	if c.dir != "" && strings.Contains(c.dir, "nkudo-pgtest-") {
		if err := os.RemoveAll(c.dir); err != nil {
			return fmt.Errorf("remove cluster directory: %w", err)
		}
	}
	return nil
}

// tempParent is os.TempDir, unless running as root with a TMPDIR that other
// users cannot enter (the server runs as "postgres"): then /tmp.
func tempParent() string {
	dir := os.TempDir()
	if os.Geteuid() != 0 {
		return dir
	}
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o001 != 0 {
		return dir
	}
	return "/tmp"
}
