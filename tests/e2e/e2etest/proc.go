package e2etest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a running program whose output goes to a log file. Stop, Kill
// and the test's cleanup end it; when the test has failed the cleanup
// prints the tail of every log it started.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}
	mu      sync.Mutex
	err     error
}

// ProcConfig describes one program to start.
type ProcConfig struct {
	// Name labels the process in messages and names its log file.
	Name string
	Bin  string
	Args []string
	// Env is added to the test's environment.
	Env []string
	// Dir is the working directory ("" = the test's).
	Dir string
	// LogDir holds the log file ("" = a new t.TempDir()).
	LogDir string
}

// Start starts a program. Its output (stdout and stderr) is appended to
// LogDir/<Name>.log, so a restarted program keeps one log.
func Start(t testing.TB, c ProcConfig) *Proc {
	t.Helper()
	if c.LogDir == "" {
		c.LogDir = t.TempDir()
	}
	logPath := filepath.Join(c.LogDir, c.Name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("start %s: log file: %v", c.Name, err)
	}
	fmt.Fprintf(f, "=== %s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), c.Bin, strings.Join(c.Args, " "))
	cmd := exec.Command(c.Bin, c.Args...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Dir = c.Dir
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so a Ctrl-C of the test run reaches it only through us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", c.Name, err)
	}
	p := &Proc{Name: c.Name, LogPath: logPath, cmd: cmd, logFile: f, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		fmt.Fprintf(f, "=== exited: %v\n", err)
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("---- log of %s (%s), last 60 lines ----\n%s", p.Name, p.LogPath, Tail(p.LogPath, 60))
		}
	})
	return p
}

// PID is the process ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// Kill sends SIGKILL (no chance to clean up: a crash) and waits for the exit.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to grace for the exit, then kills. It
// returns the exit error of a process that did not exit cleanly on its own.
func (p *Proc) Stop(grace time.Duration) error {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
			return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", p.Name, grace)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var ee *exec.ExitError
	if errors.As(p.err, &ee) && ee.Exited() && ee.ExitCode() != 0 {
		return fmt.Errorf("%s exited: %w", p.Name, p.err)
	}
	return nil
}

// Log returns everything the process has written so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Tail returns the last n lines of a file ("" when it cannot be read).
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Run runs a program to completion and returns its combined output. It
// fails the test (showing the output) when the program exits non-zero.
func Run(t testing.TB, ctx context.Context, env []string, bin string, args ...string) string {
	t.Helper()
	out, err := RunErr(ctx, env, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return out
}

// RunErr runs a program to completion and returns its combined output and exit error.
func RunErr(ctx context.Context, env []string, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Eventually polls cond every interval until it returns nil or the
// deadline passes; then it fails the test with the last error.
func Eventually(t testing.TB, ctx context.Context, timeout time.Duration, what string, cond func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = cond(ctx); last == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached within %s: %v", what, timeout, last)
		case <-tick.C:
		}
	}
}
