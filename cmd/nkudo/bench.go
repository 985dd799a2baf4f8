package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/internal/fleetsim"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/backend"
)

// BenchCmd groups the measurements.
type BenchCmd struct {
	Fleet BenchFleetCmd `cmd:"" help:"Simulate a fleet of enrolled sites against a control plane on this machine and report convergence, plan pickup, heartbeats and resources."`
}

// BenchFleetCmd runs the fleet simulator (internal/fleetsim) against an
// in-process `nkudo serve`, or against --replicas `nkudo serve` processes
// it starts on one Postgres database.
type BenchFleetCmd struct {
	Sites       int           `help:"Simulated sites (each a real agent: enrollment, mTLS, executor and action cache), at most 20000." default:"100"`
	VMs         int           `name:"vms" help:"VMs per site, at most 100." default:"10"`
	Timeout     time.Duration `help:"Bound on the whole run, at most 2h." default:"10m"`
	DatabaseURL string        `help:"postgres://… for Postgres; empty for SQLite in the work dir." placeholder:"URL"`
	Replicas    int           `help:"0: serve in this process; N: start N 'nkudo serve' processes on loopback (more than one needs Postgres)." default:"0"`
	// KillReplicaAfter is a count of converged sites, not a time, so the
	// kill lands mid-rollout whatever the machine's speed.
	KillReplicaAfter  int           `help:"kill -9 replica --kill-replica once this many sites have converged in the rollout (needs --replicas 2 or more)." placeholder:"SITES"`
	KillReplica       int           `help:"Which replica --kill-replica-after kills: 0 is the one webhooks reach first, so it reconciles; the others serve agents." default:"1"`
	Latency           time.Duration `help:"Added to every simulated hypervisor call." default:"0s"`
	FailureRate       float64       `help:"Share (0–1) of simulated hypervisor calls that fail." default:"0"`
	HeartbeatInterval time.Duration `help:"Heartbeat interval the control plane hands the agents." default:"10s"`
	PollWait          time.Duration `help:"The agents' plan long-poll." default:"30s"`
	// Polling is off by default: every commit arrives by webhook, so the
	// figures time the webhook path alone.
	PollInterval string `help:"The control plane's --poll-interval (negative: no polling)." default:"-1s"`
	WorkDir      string `help:"Directory for the database, PKI, repository and agents' state (default: a temporary directory, removed afterwards)." type:"path" placeholder:"DIR"`
	AgentDir     string `help:"Directory for the simulated agents' state (default: a temporary directory in /dev/shm when there is one, so the agents' fsyncs do not weigh on the control plane's figures; else in the work dir)." type:"path" placeholder:"DIR"`
	NkudoBinary  string `help:"The nkudo executable the replicas run (default: this one)." type:"path" placeholder:"FILE"`
	Output       string `short:"o" help:"Report format: table or json." default:"table" enum:"table,json"`
	Quiet        bool   `help:"No progress lines on stderr."`

	// A short lease moves a killed reconciling replica's work sooner.
	LeaseTTL time.Duration `name:"lease-ttl" help:"The control plane's --lease-ttl (0: its default)." default:"0s"`
}

// Run runs the simulation and prints the report; it fails when the fleet
// does not converge or the run shows duplicates or a wrong nkudo/apply.
func (c *BenchFleetCmd) Run(ctx context.Context, g *Globals) error {
	var progress io.Writer
	if !c.Quiet {
		progress = g.stderr
	}
	rep, err := c.run(ctx, progress)
	if rep != nil {
		if c.Output == "json" {
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				return err
			}
		} else if err := rep.WriteTable(g.stdout); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	if p := rep.Problems(); len(p) > 0 {
		return fmt.Errorf("fleet simulation: %s", strings.Join(p, "; "))
	}
	return nil
}

func (c *BenchFleetCmd) run(ctx context.Context, progress io.Writer) (*fleetsim.Report, error) {
	if err := fleetsim.CheckSize(c.Sites, c.VMs, c.Timeout); err != nil {
		return nil, err
	}
	switch {
	case c.Replicas < 0:
		return nil, fmt.Errorf("--replicas %d: want 0 (in-process) or more", c.Replicas)
	case c.Replicas > 5:
		return nil, fmt.Errorf("--replicas %d: at most 5", c.Replicas)
	case c.Replicas > 1 && databaseKind(c.DatabaseURL) != "postgres":
		return nil, fmt.Errorf("--replicas %d: several replicas need --database-url postgres://…", c.Replicas)
	case c.KillReplicaAfter > 0 && c.Replicas < 2:
		return nil, errors.New("--kill-replica-after needs --replicas 2 or more")
	case c.HeartbeatInterval < time.Second:
		return nil, fmt.Errorf("--heartbeat-interval %s: at least 1s", c.HeartbeatInterval)
	}
	dir := c.WorkDir
	if dir == "" {
		d, err := os.MkdirTemp("", "nkudo-bench-fleet-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	agents := c.AgentDir
	if agents == "" {
		agents = filepath.Join(dir, "fleet")
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			d, err := os.MkdirTemp("/dev/shm", "nkudo-bench-fleet-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(d)
			agents = d
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout+time.Minute)
	defer cancel()
	cp, stop, err := c.startControlPlane(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer stop()
	return fleetsim.Run(ctx, fleetsim.Options{
		Sites: c.Sites, VMs: c.VMs, Timeout: c.Timeout, WorkDir: agents, ControlPlane: cp,
		Latency: c.Latency, FailureRate: c.FailureRate, PollWait: c.PollWait, KillReplicaAfter: c.KillReplicaAfter, KillReplica: c.KillReplica,
		Progress: progress,
	})
}

// startControlPlane makes a persistent PKI, bootstraps an admin token on
// the store and starts the control plane(s) with `nkudo serve`'s own
// flags. The returned store stays open for the simulator's reads.
func (c *BenchFleetCmd) startControlPlane(ctx context.Context, dir string) (cp fleetsim.ControlPlane, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	files, err := pki.Init(filepath.Join(dir, "pki"), []string{"127.0.0.1", "localhost"}, time.Now())
	if err != nil {
		return cp, stop, err
	}
	caPEM, err := os.ReadFile(files.CACert)
	if err != nil {
		return cp, stop, err
	}
	cp.CAPool = x509.NewCertPool()
	cp.CAPool.AppendCertsFromPEM(caPEM)
	cp.CAFingerprint = files.Fingerprint

	// The first data dir holds the SQLite file and the secret key every
	// replica shares.
	data := filepath.Join(dir, "data")
	sf := StoreFlags{DataDir: data, DatabaseURL: c.DatabaseURL, AuditKeyFile: files.AuditKey}
	quiet := slog.New(slog.DiscardHandler)
	st, err := sf.open(ctx, quiet, files.CACert, true)
	if err != nil {
		return cp, stop, err
	}
	stops = append(stops, func() { st.Close() })
	cp.Store = st
	tok, err := controlplane.CreateAPIToken(ctx, st, store.Actor{Kind: store.ActorAdmin, ID: "nkudo-bench"},
		api.CreateTokenRequest{Admin: true, Name: "nkudo bench fleet"}, time.Now())
	if err != nil {
		return cp, stop, fmt.Errorf("create admin token: %w", err)
	}
	cp.AdminToken = tok.Token
	cp.DBSize = func(ctx context.Context) (int64, error) { return databaseSize(ctx, c.DatabaseURL, data) }

	var replicas []*replica
	n := max(c.Replicas, 1)
	for i := range n {
		addr, err := freeLoopbackAddr()
		if err != nil {
			return cp, stop, err
		}
		cp.URLs = append(cp.URLs, "https://"+addr)
		dataDir := data
		if c.Replicas > 0 {
			dataDir = filepath.Join(dir, fmt.Sprintf("replica-%d", i))
		}
		args := c.serveArgs(addr, dataDir, filepath.Join(data, "secret.key"), files)
		if c.Replicas == 0 {
			s, err := serveInProcess(ctx, args, filepath.Join(dir, "serve.log"))
			if err != nil {
				return cp, stop, err
			}
			stops = append(stops, s)
			cp.Usage = selfUsage
			continue
		}
		bin := c.NkudoBinary
		if bin == "" {
			if bin, err = os.Executable(); err != nil {
				return cp, stop, fmt.Errorf("find the nkudo executable: %w", err)
			}
		}
		r, err := startReplica(bin, args, filepath.Join(dir, fmt.Sprintf("replica-%d.log", i)))
		if err != nil {
			return cp, stop, err
		}
		stops = append(stops, r.stop)
		replicas = append(replicas, r)
	}
	if c.Replicas > 0 {
		cp.Kill = func(i int) error { return replicas[i].kill() }
		cp.Usage = func() (fleetsim.Usage, error) { return replicaUsage(replicas), nil }
	}
	// Ready: every replica answers its readiness check.
	for _, u := range cp.URLs {
		if err := waitReady(ctx, u, cp.CAPool); err != nil {
			return cp, stop, err
		}
	}
	return cp, stop, nil
}

// serveArgs are the `nkudo serve` arguments of one control plane of the
// simulation: loopback only, local repositories allowed, no polling unless
// asked (the simulator delivers webhooks), enrollment unthrottled, and the heartbeat
// interval fixed at --heartbeat-interval whatever the fleet's size.
func (c *BenchFleetCmd) serveArgs(addr, dataDir, secretKey string, f pki.InitFiles) []string {
	rate := float64(c.Sites) / c.HeartbeatInterval.Seconds()
	args := []string{"serve", "--listen=" + addr, "--public-url=https://" + addr,
		"--data-dir=" + dataDir, "--database-url=" + c.DatabaseURL, "--secret-key-file=" + secretKey,
		"--ca-cert-file=" + f.CACert, "--ca-key-file=" + f.CAKey, "--server-cert-file=" + f.ServerCert, "--server-key-file=" + f.ServerKey,
		"--audit-key-file=" + f.AuditKey,
		"--allow-local-sources", "--egress-allow=127.0.0.0/8", "--poll-interval=" + c.PollInterval,
		"--min-heartbeat-interval=" + c.HeartbeatInterval.String(), "--heartbeat-rate=" + strconv.FormatFloat(max(rate, 1), 'f', -1, 64),
		"--enroll-per-minute=1000000000", "--enroll-burst=" + strconv.Itoa(max(c.Sites, 5)),
		"--no-per-site-metrics", "--shutdown-timeout=5s", "--log-level=warn",
		"--retention-interval=-1s", "--image-gc-interval=-1s",
	}
	if c.LeaseTTL > 0 {
		args = append(args, "--lease-ttl="+c.LeaseTTL.String())
	}
	return args
}

// serveInProcess runs `nkudo serve` with args in this process, its log to
// logPath, until the returned stop is called.
func serveInProcess(ctx context.Context, args []string, logPath string) (stop func(), err error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, logf, logf) }()
	return func() { cancel(); <-done; logf.Close() }, nil
}

// selfUsage is this process's peak RSS and CPU time: the in-process
// control plane together with the simulated agents.
func selfUsage() (fleetsim.Usage, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return fleetsim.Usage{}, fmt.Errorf("getrusage: %w", err)
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return fleetsim.Usage{PeakRSSBytes: ru.Maxrss * 1024, CPUSeconds: cpu.Seconds(),
		Note: "in-process: includes the simulated agents; use --replicas 1 for the server alone"}, nil
}

// replica is one `nkudo serve` child process.
type replica struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File

	mu      sync.Mutex
	peakRSS int64   // bytes, the largest VmHWM read
	cpu     float64 // seconds, the last utime+stime read
}

func startReplica(bin string, args []string, logPath string) (*replica, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A replica never outlives the simulation, even one killed itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s serve: %w", bin, err)
	}
	r := &replica{cmd: cmd, done: make(chan struct{}), log: logf}
	go func() { cmd.Wait(); close(r.done) }()
	// Sampled, because a killed replica's /proc entry goes with it.
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			r.sample()
			select {
			case <-r.done:
				return
			case <-t.C:
			}
		}
	}()
	return r, nil
}

// sample reads the replica's peak RSS and CPU time from /proc.
func (r *replica) sample() {
	pid := r.cmd.Process.Pid
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	var hwm int64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			hwm, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th, in clock ticks (100 per second on Linux).
	var cpu float64
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			s, _ := strconv.ParseFloat(f[12], 64)
			cpu = (u + s) / 100
		}
	}
	r.mu.Lock()
	r.peakRSS = max(r.peakRSS, hwm*1024)
	r.cpu = max(r.cpu, cpu)
	r.mu.Unlock()
}

// kill ends the replica with SIGKILL.
func (r *replica) kill() error {
	r.sample()
	if err := r.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("kill replica %d: %w", r.cmd.Process.Pid, err)
	}
	<-r.done
	return nil
}

// stop ends the replica with SIGTERM (SIGKILL after 10s).
func (r *replica) stop() {
	r.sample()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	r.log.Close()
}

// replicaUsage sums the replicas' peaks and CPU times.
func replicaUsage(rs []*replica) fleetsim.Usage {
	var u fleetsim.Usage
	for _, r := range rs {
		r.sample()
		r.mu.Lock()
		u.PeakRSSBytes += r.peakRSS
		u.CPUSeconds += r.cpu
		r.mu.Unlock()
	}
	if len(rs) > 1 {
		u.Note = fmt.Sprintf("sum over %d replicas", len(rs))
	}
	return u
}

// waitReady waits until the control plane at url answers /readyz.
func waitReady(ctx context.Context, url string, pool *x509.CertPool) error {
	c, err := api.NewClient(api.ClientConfig{BaseURL: url, RootCAs: pool})
	if err != nil {
		return err
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		err := c.Health(ctx, true)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("control plane %s not ready: %w", url, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// databaseSize is the SQLite file with its journal, or the Postgres database.
func databaseSize(ctx context.Context, url, dataDir string) (int64, error) {
	if databaseKind(url) == "sqlite" {
		path, err := backend.SQLitePath(url, dataDir)
		if err != nil {
			return 0, err
		}
		var n int64
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			if fi, err := os.Stat(p); err == nil {
				n += fi.Size()
			}
		}
		return n, nil
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, fmt.Errorf("connect %s: %w", backend.Redact(url), err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&n); err != nil {
		return 0, fmt.Errorf("database size: %w", err)
	}
	return n, nil
}
