package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nkudo/nkudo/agent/debugbundle"
	"github.com/nkudo/nkudo/api"
)

type debugBundleCmd struct {
	StateDir    string `help:"Agent state dir." default:"/var/lib/nkudo-edge" name:"state-dir"`
	PKIDir      string `help:"PKI dir: the certificate's public facts and the identity are collected, never the key." default:"/var/lib/nkudo-edge/pki" name:"pki-dir"`
	Output      string `help:"Tarball to write, or - for standard output (default: nkudo-edge-debug-<host>-<time>.tar.gz in the current directory)." short:"o"`
	Hypervisor  string `help:"cloud-hypervisor binary (for the facts)." default:"cloud-hypervisor"`
	NetBird     string `help:"netbird binary (for the facts and netbird status --json)." default:"netbird" name:"netbird"`
	JournalUnit string `help:"systemd unit whose journal tail is collected (empty: none)." default:"nkudo-edge" name:"journal-unit"`
	MaxLogBytes int64  `help:"Bytes kept from the end of each log (VM serial and VMM logs, the journal)." default:"1048576" name:"max-log-bytes"`
	Provider    string `help:"Hypervisor provider the agent runs (for the facts): cloud-hypervisor or qemu." default:"cloud-hypervisor" enum:"cloud-hypervisor,qemu" env:"NKUDO_PROVIDER"`
}

// Help is shown by kong under the command's usage.
func (d *debugBundleCmd) Help() string {
	return `Collects the agent's diagnostics into a gzipped tarball to attach to a ticket:
host facts (as "nkudo-edge facts"), version, cached action results, buffered
results and logs, per-VM metadata and log tails, the agent's journal tail, the certificate's public
facts, the identity with the NetBird setup key redacted, "netbird status
--json", a listing of the state dir, and manifest.json saying what was
collected and what was skipped and why. Private keys, setup keys and tokens
are never included; symlinks out of the state dir are not followed. Prints
the path of the tarball. Exit status 0 when the tarball was written, 1 when
it could not be.`
}

func (d *debugBundleCmd) Run(ctx context.Context, logger *slog.Logger, out io.Writer) error {
	now := time.Now().UTC()
	host, _ := os.Hostname()
	name := debugbundle.DefaultName(host, now)
	opts := debugbundle.Options{
		StateDir: d.StateDir, PKIDir: d.PKIDir, AgentVersion: version, NetBird: d.NetBird, JournalUnit: d.JournalUnit,
		// A token left in the environment by an enrollment is redacted too.
		Secrets:      []string{os.Getenv("NKUDO_ENROLL_TOKEN")},
		MaxFileBytes: d.MaxLogBytes, Name: name, Now: func() time.Time { return now }, Logger: logger,
		Facts: func(ctx context.Context) (any, error) { return d.facts(ctx, logger) },
	}
	if d.Output == "-" {
		m, err := debugbundle.Write(ctx, out, opts)
		if err != nil {
			return err
		}
		logger.Info("debug bundle written to standard output", "collected", len(m.Collected), "skipped", len(m.Skipped))
		return nil
	}
	path := d.Output
	if path == "" {
		path = name + ".tar.gz"
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("debug bundle %s: %w", path, err)
	}
	m, err := debugbundle.WriteFile(ctx, abs, opts)
	if err != nil {
		return err
	}
	logger.Info("debug bundle written", "path", abs, "collected", len(m.Collected), "skipped", len(m.Skipped))
	_, err = fmt.Fprintln(out, abs)
	return err
}

// facts is what `nkudo-edge facts` prints. The provider creates its dirs
// when it starts, and a bundle must change nothing (run as root, it would
// leave directories the agent's user cannot write): without them, the
// same probes run against a scratch dir and the inventory is empty.
func (d *debugBundleCmd) facts(ctx context.Context, logger *slog.Logger) (api.HeartbeatRequest, error) {
	pf := providerFlags{StateDir: d.StateDir, Hypervisor: d.Hypervisor, NetBird: d.NetBird, DisableNetworking: true, Provider: d.Provider,
		QEMUImg: "qemu-img", Accel: "tcg"}
	hv := filepath.Join(d.StateDir, "hypervisor")
	if d.Provider == "qemu" {
		hv = filepath.Join(d.StateDir, "qemu")
	}
	var missing []string
	for _, sub := range []string{"vms", "images"} {
		if fi, err := os.Stat(filepath.Join(hv, sub)); err != nil || !fi.IsDir() {
			missing = append(missing, filepath.Join(hv, sub))
		}
	}
	provFlags := pf
	if len(missing) > 0 {
		scratch, err := os.MkdirTemp("", "nkudo-edge-facts-")
		if err != nil {
			return api.HeartbeatRequest{}, fmt.Errorf("facts: %w", err)
		}
		defer os.RemoveAll(scratch)
		provFlags.StateDir = scratch
		logger.Warn("no VM state yet; facts carry an empty inventory", "missing", strings.Join(missing, ", "))
	}
	prov, err := provFlags.provider(ctx, logger, false, nil, nil)
	if err != nil {
		return api.HeartbeatRequest{}, err
	}
	req := api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion, AgentVersion: version, Facts: pf.facts(prov, logger).Collect(ctx)}
	if req.VMs, err = prov.List(ctx); err != nil {
		return req, err
	}
	return req, nil
}
