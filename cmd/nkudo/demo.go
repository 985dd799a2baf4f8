package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nkudo/nkudo/agent/providers/qemu"
	"github.com/nkudo/nkudo/internal/demo"
	manifestsexample "github.com/nkudo/nkudo/manifests-example"
)

// init turns this binary into the demo's fake Cloud Hypervisor when it is
// started under that name: the demo links <data-dir>/bin/cloud-hypervisor
// to itself, so it needs no second program.
func init() {
	if demo.IsFakeHypervisor(os.Args[0]) {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := demo.FakeHypervisor(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
}

// DemoCmd runs the one-command demo.
type DemoCmd struct {
	DataDir    string        `help:"Keep everything the demo creates in DIR (new or empty) instead of a temporary directory." type:"path" placeholder:"DIR"`
	Manifests  string        `help:"Example repository to start from (default: the manifests-example built into this binary)." type:"path" placeholder:"DIR"`
	Listen     string        `help:"Control-plane address." default:"127.0.0.1:0"`
	Hypervisor string        `help:"auto (a real cloud-hypervisor when one is on PATH, /dev/kvm is usable and --manifests names real images; else the built-in fake), fake, qemu (real guests under QEMU, built from the Debian cloud kernel and busybox-static; KVM when a probe boot works, else TCG), or the path of a cloud-hypervisor binary." default:"auto" placeholder:"auto|fake|qemu|PATH"`
	JSON       bool          `help:"Print machine-readable events, one JSON object per line." name:"json"`
	Once       bool          `help:"Run the story and exit 0 once every site has converged on the second commit (non-zero with the reason otherwise)."`
	Timeout    time.Duration `help:"Overall time limit with --once." default:"5m"`
	Verbose    bool          `help:"Send component logs to stderr instead of <data-dir>/logs/demo.log." short:"v"`
}

// Help is shown by `nkudo demo --help`.
func (c *DemoCmd) Help() string {
	return `Starts a control plane on the embedded defaults (SQLite, dev CA), a tenant, a git
repository made from manifests-example, and one edge agent per example site, then
reconciles two commits and narrates each step. Ctrl-C stops everything.

Exit codes: 0 success (or Ctrl-C), 1 the story did not complete (the reason is printed).`
}

// Run runs the demo until Ctrl-C (or, with --once, until it is done).
func (c *DemoCmd) Run(ctx context.Context, g *Globals) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: find own executable: %w", err)
	}
	hv, note := c.Hypervisor, ""
	provider, accel := "", ""
	switch hv {
	case "qemu":
		provider, hv = demo.ProviderQEMU, qemu.DefaultBinary()
		var probe string
		if accel, probe, err = qemu.ResolveAccel(ctx, hv, qemu.AccelAuto); err != nil {
			return err
		}
		if probe != "" {
			note = "KVM is unusable here (" + firstLine(probe) + "): guests run under TCG, software emulation"
		}
	case "auto":
		hv = demo.RealHypervisor()
		if hv != "" && c.Manifests == "" {
			// The example's artifacts live on a placeholder mirror: a real
			// hypervisor could not boot them.
			note = "found " + hv + " and /dev/kvm, but the example's images are placeholders; pass --hypervisor " + hv + " with --manifests naming images you can download"
			hv = ""
		}
	case "fake":
		hv = ""
	}
	var logger *slog.Logger
	if c.Verbose {
		logger = g.Logger()
	}
	if c.Once {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	err = demo.Run(ctx, demo.Options{
		Manifests: c.Manifests, ManifestsFS: manifestsexample.FS(), DataDir: c.DataDir, Listen: c.Listen, Serve: demoServe,
		Hypervisor: hv, HypervisorNote: note, Provider: provider, Accel: accel, SelfExecutable: self, Out: g.stdout, JSON: c.JSON, Once: c.Once, Logger: logger,
	})
	if c.Once && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("demo did not finish within --timeout %s: %w", c.Timeout, err)
	}
	return err
}

// demoServe is `nkudo serve` with demo-friendly settings: fast heartbeats
// and an enrollment rate that lets every example site enroll at once.
func demoServe(ctx context.Context, ln net.Listener, dataDir string, log *slog.Logger) error {
	s := ServeCmd{
		StoreFlags:           StoreFlags{DataDir: dataDir},
		PKIFlags:             PKIFlags{ClientCertTTL: 24 * time.Hour},
		HeartbeatRate:        50,
		MinHeartbeatInterval: 2 * time.Second,
		EnrollPerMinute:      600,
		EnrollBurst:          50,
		ShutdownTimeout:      5 * time.Second,
		// The demo's git server is on loopback.
		GitOpsFlags: GitOpsFlags{EgressAllow: []string{"127.0.0.0/8", "::1/128"}},
	}
	return s.Serve(ctx, log, ln)
}

// firstLine keeps a probe's diagnosis to one line of narration.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
