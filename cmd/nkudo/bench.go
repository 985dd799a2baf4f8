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
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
	// The agent's own default (nkudo-edge --poll-wait), so idle agents
	// cost the server what real ones do.
	PollWait time.Duration `help:"The agents' plan long-poll." default:"2m"`
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

	// Connection cost alone: 10,000 sites without a 100,000-VM rollout.
	NoChanges      bool `help:"Commit nothing: enroll the sites and connect their agents (then --reconnect-storm if given)."`
	ReconnectStorm bool `help:"Last, restart the whole control plane at once (in-process: stop and start; replicas: kill -9 each and start it again) and time every agent coming back."`
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
	case c.KillReplicaAfter > 0 && c.NoChanges:
		return nil, errors.New("--kill-replica-after kills a replica in the rollout; --no-changes has none")
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
		NoChanges: c.NoChanges, ReconnectStorm: c.ReconnectStorm,
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

	var replicas replicaSet
	stops = append(stops, replicas.stop)
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
			srv := &inProcessServer{args: args, logPath: filepath.Join(dir, "serve.log")}
			if err := srv.start(ctx); err != nil {
				return cp, stop, err
			}
			stops = append(stops, srv.stop)
			cp.Usage = selfUsage
			cp.RSS = func() (int64, string, error) {
				n, err := procStatusBytes("/proc/self/status", "VmRSS")
				return n, "in-process: includes the simulated agents", err
			}
			// The server lives on the run's context, not the storm's.
			url := cp.URLs[0]
			cp.Restart = func(rctx context.Context, down func()) error {
				srv.stop()
				down()
				if err := srv.start(ctx); err != nil {
					return err
				}
				return srv.ready(rctx, url, cp.CAPool)
			}
			continue
		}
		bin := c.NkudoBinary
		if bin == "" {
			if bin, err = os.Executable(); err != nil {
				return cp, stop, fmt.Errorf("find the nkudo executable: %w", err)
			}
		}
		r, err := startReplica(bin, args, filepath.Join(dir, fmt.Sprintf("replica-%d.log", i)), nil)
		if err != nil {
			return cp, stop, err
		}
		replicas.add(r)
	}
	if c.Replicas > 0 {
		cp.Kill = func(i int) error { return replicas.get(i).kill() }
		cp.Usage = func() (fleetsim.Usage, error) { return replicaUsage(replicas.all()), nil }
		cp.RSS = replicas.rss
		urls := cp.URLs
		cp.Restart = func(rctx context.Context, down func()) error {
			if err := replicas.restart(down); err != nil {
				return err
			}
			for _, u := range urls {
				if err := waitReady(rctx, u, cp.CAPool); err != nil {
					return err
				}
			}
			return nil
		}
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

// inProcessServer runs `nkudo serve` with args in this process, its log
// appended to logPath; it can be stopped and started again (the reconnect
// storm) on the same address and data.
type inProcessServer struct {
	args    []string
	logPath string

	mu     sync.Mutex
	cancel context.CancelFunc // nil when stopped
	done   chan struct{}      // closed when run returned, with code set
	code   int
	log    *os.File
}

func (s *inProcessServer) start(ctx context.Context) error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s.mu.Lock()
	s.cancel, s.done, s.log = cancel, done, logf
	s.mu.Unlock()
	go func() {
		code := run(ctx, s.args, logf, logf)
		s.mu.Lock()
		s.code = code
		s.mu.Unlock()
		close(done)
	}()
	return nil
}

// ready waits until the server answers its readiness check at url, and
// fails at once when it has exited instead (a port taken, a store that
// does not open).
func (s *inProcessServer) ready(ctx context.Context, url string, pool *x509.CertPool) error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := waitReady(ctx, url, pool)
	select {
	case <-done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return fmt.Errorf("nkudo serve exited with code %d before it was ready; see %s", s.code, s.logPath)
	default:
	}
	return err
}

// stop ends the server as its context's end does (a graceful shutdown)
// and waits for it; stopping a stopped server does nothing.
func (s *inProcessServer) stop() {
	s.mu.Lock()
	cancel, done, logf := s.cancel, s.done, s.log
	s.cancel = nil
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	logf.Close()
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
	cmd     *exec.Cmd
	done    chan struct{}
	log     *os.File
	bin     string
	args    []string
	logPath string

	mu      sync.Mutex
	peakRSS int64   // bytes, the largest VmHWM read (of this slot's earlier processes too)
	cpu     float64 // seconds, the last utime+stime read plus cpuBase
	cpuBase float64 // seconds used by this slot's earlier processes
}

// startReplica starts `bin args`, its output appended to logPath. prev,
// when not nil, is the replica's earlier process (killed): the new one
// carries its peak RSS and CPU time on, so the report covers both.
func startReplica(bin string, args []string, logPath string, prev *replica) (*replica, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
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
	r := &replica{cmd: cmd, done: make(chan struct{}), log: logf, bin: bin, args: args, logPath: logPath}
	if prev != nil {
		prev.mu.Lock()
		r.peakRSS, r.cpu, r.cpuBase = prev.peakRSS, prev.cpu, prev.cpu
		prev.mu.Unlock()
	}
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
	r.cpu = max(r.cpu, r.cpuBase+cpu)
	r.mu.Unlock()
}

// rss is the replica's current RSS (VmRSS); 0 when it is not running.
func (r *replica) rss() (int64, error) {
	select {
	case <-r.done:
		return 0, nil
	default:
	}
	n, err := procStatusBytes(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid), "VmRSS")
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil // ended since
	}
	return n, err
}

// procStatusBytes reads a "Field:  N kB" line of a /proc/<pid>/status file.
func procStatusBytes(path, field string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s: %w", path, field, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, field)
}

// replicaSet is the simulation's replicas; a restart replaces them, so
// Kill, Usage and RSS always reach the running processes.
type replicaSet struct {
	mu sync.Mutex
	rs []*replica
}

func (s *replicaSet) add(r *replica) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rs = append(s.rs, r)
}

func (s *replicaSet) get(i int) *replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rs[i]
}

func (s *replicaSet) all() []*replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rs)
}

// restart kills every replica with SIGKILL, calls down, then starts each
// again with its own arguments on its own address.
func (s *replicaSet) restart(down func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rs {
		if err := r.kill(); err != nil {
			return err
		}
		r.log.Close()
	}
	down()
	for i, r := range s.rs {
		n, err := startReplica(r.bin, r.args, r.logPath, r)
		if err != nil {
			return fmt.Errorf("restart replica %d: %w", i, err)
		}
		s.rs[i] = n
	}
	return nil
}

// rss sums the replicas' current RSS.
func (s *replicaSet) rss() (int64, string, error) {
	var sum int64
	rs := s.all()
	for _, r := range rs {
		n, err := r.rss()
		if err != nil {
			return 0, "", err
		}
		sum += n
	}
	note := ""
	if len(rs) > 1 {
		note = fmt.Sprintf("sum over %d replicas", len(rs))
	}
	return sum, note, nil
}

// stop stops every replica.
func (s *replicaSet) stop() {
	for _, r := range s.all() {
		r.stop()
	}
}

// kill ends the replica with SIGKILL; one that has ended already is left be.
func (r *replica) kill() error {
	select {
	case <-r.done:
		return nil
	default:
	}
	r.sample()
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
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
	// The pool's own parameters (pool_max_conns, …), which nkudo serve
	// takes in the same URL, are not connection parameters.
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", backend.Redact(url), err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
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
