// Command nkudo-edge is the n-kudo edge agent: it enrolls a site with the
// control plane, then heartbeats host facts and VM inventory, long-polls
// for plans, applies them with Cloud Hypervisor or QEMU and reports results and
// logs. It only wires the parts of package agent together.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"
	"github.com/alecthomas/kong"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/agent/netbird"
	"github.com/nkudo/nkudo/agent/providers/cloudhypervisor"
	"github.com/nkudo/nkudo/agent/providers/qemu"
	"github.com/nkudo/nkudo/api"
	buildversion "github.com/nkudo/nkudo/internal/version"
	"github.com/nkudo/nkudo/model"
)

// version is the agent's release version, stamped into internal/version
// by the release scripts ("dev" for an unstamped build).
var version = buildversion.Get().Version

type globals struct {
	LogLevel  string `help:"Log level: debug, info, warn, error." default:"info" enum:"debug,info,warn,error" env:"NKUDO_LOG_LEVEL"`
	LogFormat string `help:"Log format: text or json." default:"text" enum:"text,json" env:"NKUDO_LOG_FORMAT"`
}

type cli struct {
	globals
	Enroll      enrollCmd      `cmd:"" help:"Enroll this host as a site's agent with a one-time token."`
	Run         runCmd         `cmd:"" help:"Run the agent until SIGTERM."`
	Facts       factsCmd       `cmd:"" help:"Print the host facts and VM inventory the agent would report (JSON)."`
	Version     versionCmd     `cmd:"" help:"Print the agent version."`
	DebugBundle debugBundleCmd `cmd:"" name:"debug-bundle" help:"Collect agent diagnostics into a tarball without secrets."`
}

type enrollCmd struct {
	ControlPlane string `help:"Control plane URL." required:"" env:"NKUDO_CONTROL_PLANE"`
	Token        string `help:"One-time enrollment token." required:"" env:"NKUDO_ENROLL_TOKEN"`
	CAHash       string `help:"Fingerprint of the control plane's CA (sha256:…), printed with the token." required:"" name:"ca-hash"`
	PKIDir       string `help:"Where key and certificates are stored." default:"/var/lib/nkudo-edge/pki" name:"pki-dir"`
	Force        bool   `help:"Enroll again even if this host is already enrolled."`
}

type providerFlags struct {
	StateDir          string        `help:"Agent state: VM disks, image cache, action cache, outbox." default:"/var/lib/nkudo-edge" name:"state-dir"`
	Hypervisor        string        `help:"cloud-hypervisor binary." default:"cloud-hypervisor"`
	NetBird           string        `help:"netbird binary." default:"netbird" name:"netbird"`
	DisableNetworking bool          `help:"Do not create TAP devices and bridges (no CAP_NET_ADMIN)."`
	StopTimeout       time.Duration `help:"How long a guest gets to obey the ACPI power button before a hard stop." default:"30s"`
	Provider          string        `help:"Hypervisor provider: cloud-hypervisor or qemu." default:"cloud-hypervisor" enum:"cloud-hypervisor,qemu" env:"NKUDO_PROVIDER"`
	QEMU              string        `help:"QEMU system emulator (qemu provider; default qemu-system-<arch> from PATH)." name:"qemu"`
	QEMUImg           string        `help:"qemu-img binary (qemu provider)." default:"qemu-img" name:"qemu-img"`
	Accel             string        `help:"QEMU acceleration: auto (probe KVM with a real boot, else TCG), kvm or tcg." default:"auto" enum:"auto,kvm,tcg"`
	HypervisorFake    bool          `help:"Development: run VMs under the built-in fake Cloud Hypervisor (the same REST API on a unix socket; boots nothing). Implies --disable-networking; no root, KVM or cloud-hypervisor needed." name:"hypervisor-fake" env:"NKUDO_HYPERVISOR_FAKE"`
}

// edgeProvider is what the commands need from either provider.
type edgeProvider interface {
	agent.Provider
	agent.Hypervisor
	Reattach(ctx context.Context) ([]model.ObservedVM, error)
}

type runCmd struct {
	providerFlags
	ControlPlane []string      `help:"Control plane URL; repeat it (or separate with commas) for replicas, tried in turn on a connection error or 5xx (default: the one enrolled with)." env:"NKUDO_CONTROL_PLANE"`
	PKIDir       string        `help:"Where key and certificates are stored." default:"/var/lib/nkudo-edge/pki" name:"pki-dir"`
	PollWait     time.Duration `help:"Plan long-poll duration (a proxy in front of the control plane must allow requests this long)." default:"2m" env:"NKUDO_POLL_WAIT"`
}

type factsCmd struct {
	providerFlags
}

type versionCmd struct{}

func main() {
	if isFakeHypervisor() {
		os.Exit(fakeHypervisor())
	}
	os.Exit(run(os.Args[1:], os.Stdout))
}

func run(args []string, stdout io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return runContext(ctx, args, stdout)
}

// runContext runs one command until it is done or ctx ends.
func runContext(ctx context.Context, args []string, stdout io.Writer) int {
	var c cli
	parser, err := kong.New(&c, kong.Name("nkudo-edge"), kong.Description("n-kudo edge agent"), kong.UsageOnError())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		parser.FatalIfErrorf(err)
	}
	logger := newLogger(os.Stderr, c.LogLevel, c.LogFormat)
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.BindTo(stdout, (*io.Writer)(nil))
	if err := kctx.Run(logger); err != nil {
		logger.Error(kctx.Command()+" failed", "err", err)
		return 1
	}
	return 0
}

// kong binds these argument types for Run methods.
func (e *enrollCmd) Run(ctx context.Context, logger *slog.Logger, out io.Writer) error {
	host, _ := os.Hostname()
	id, err := agent.Enroll(ctx, agent.EnrollOptions{ControlPlane: e.ControlPlane, Token: e.Token, CAHash: e.CAHash,
		PKIDir: e.PKIDir, Force: e.Force, Hostname: host}, logger)
	if err != nil {
		return err
	}
	_, na := id.Validity()
	fmt.Fprintf(out, "enrolled as %s/%s; certificate valid until %s\n", id.Tenant(), id.Site(), na.Format(time.RFC3339))
	return nil
}

// provider builds the configured provider. Only a provider that will
// launch VMs (launches) resolves --accel auto, which costs a probe boot.
// cp, when not nil, is the agent's client of the control plane: images on
// its origin are fetched through it (mTLS).
// siteKey decrypts user-data encrypted to the site; nil where no VM is
// created (facts, debug bundle).
func (p providerFlags) provider(ctx context.Context, logger *slog.Logger, launches bool, cp *api.Client, siteKey *age.X25519Identity) (edgeProvider, error) {
	var cpURL string
	var cpHTTP *http.Client
	if cp != nil {
		cpURL, cpHTTP = cp.BaseURL(), cp.HTTPClient()
	}
	if p.HypervisorFake && p.Provider == "qemu" {
		return nil, errors.New("--hypervisor-fake fakes Cloud Hypervisor: it cannot be used with --provider qemu")
	}
	if p.Provider == "qemu" {
		bin := p.QEMU
		if bin == "" {
			bin = qemu.DefaultBinary()
		}
		accel := p.Accel
		if accel == qemu.AccelAuto && launches {
			var note string
			var err error
			if accel, note, err = qemu.ResolveAccel(ctx, bin, accel); err != nil {
				return nil, err
			}
			if note != "" {
				logger.Warn("KVM unusable; QEMU runs guests under TCG (software emulation)", "probe", note)
			}
		} else if accel == qemu.AccelAuto {
			accel = qemu.AccelTCG
		}
		logger.Info("qemu provider", "binary", bin, "accel", accel)
		return qemu.New(qemu.Options{
			StateDir: filepath.Join(p.StateDir, "qemu"), Binary: bin, Img: p.QEMUImg, Accel: accel, Logger: logger,
			DisableNetworking: p.DisableNetworking, StopTimeout: p.StopTimeout,
			ControlPlane: cpURL, ControlPlaneHTTP: cpHTTP, SiteKey: siteKey,
		})
	}
	o := cloudhypervisor.Options{
		StateDir: filepath.Join(p.StateDir, "hypervisor"), Binary: p.Hypervisor, Logger: logger,
		DisableNetworking: p.DisableNetworking, StopTimeout: p.StopTimeout,
		ControlPlane: cpURL, ControlPlaneHTTP: cpHTTP, SiteKey: siteKey,
	}
	if p.HypervisorFake {
		bin, err := linkFakeHypervisor(filepath.Join(p.StateDir, "bin"))
		if err != nil {
			return nil, err
		}
		o.Binary, o.DisableNetworking, o.Env = bin, true, []string{fakeHypervisorEnv + "=1"}
		logger.Warn("running VMs under the fake Cloud Hypervisor: nothing boots (development only)", "binary", bin)
	}
	return cloudhypervisor.New(o)
}

func (p providerFlags) facts(prov edgeProvider, logger *slog.Logger) agent.FactsSource {
	return agent.FactsSource{StateDir: p.StateDir, Hypervisor: prov, NetBird: &netbird.Client{Binary: p.NetBird, Logger: logger},
		AgentVersion: version}
}

func (r *runCmd) Run(ctx context.Context, logger *slog.Logger) error {
	id, err := agent.LoadIdentity(r.PKIDir)
	if err != nil {
		return err
	}
	urls := controlPlaneURLs(r.ControlPlane, id.ControlPlane())
	url := urls[0]
	client, err := api.NewClient(api.ClientConfig{BaseURL: url, FailoverURLs: urls[1:], RootCAs: id.RootCAs(),
		Certificate: id.Certificate, UserAgent: "nkudo-edge/" + version})
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	prov, err := r.provider(ctx, logger, true, client, id.SiteKey())
	if err != nil {
		return err
	}
	if _, err := prov.Reattach(ctx); err != nil {
		logger.Warn("cannot list VMs at start", "err", err)
	}
	if nb := id.NetBird(); nb != nil && nb.SetupKey != "" {
		c := &netbird.Client{Binary: r.NetBird, Logger: logger}
		if err := c.Up(ctx, *nb); err != nil {
			logger.Warn("netbird up failed; reported in host facts", "err", err)
		}
	}
	ex, err := agent.NewExecutor(filepath.Join(r.StateDir, "agent"), prov, logger)
	if err != nil {
		return err
	}
	if err := ex.Cache.Prune(time.Now(), 30*24*time.Hour); err != nil {
		logger.Warn("cannot prune the action cache", "err", err)
	}
	logger.Info("agent starting", "version", version, "tenant", id.Tenant(), "site", id.Site(), "controlPlane", strings.Join(urls, ","))
	a := agent.New(agent.Config{
		Client: client, Executor: ex, Facts: r.facts(prov, logger), Logger: logger, AgentVersion: version,
		SiteRecipient: id.SiteRecipient(),
		PollWait:      r.PollWait,
		Renew:         func(ctx context.Context) error { return id.RenewLoop(ctx, client, logger) },
		// Setup keys the control plane mints arrive with heartbeats.
		NetBird: &netbird.Client{Binary: r.NetBird, Logger: logger},
	})
	err = a.Run(ctx)
	logger.Info("agent stopped")
	return err
}

// controlPlaneURLs is the agent's list of control-plane replicas: the
// --control-plane values in order (blank ones and repeats dropped), or the
// URL enrolled with when there are none.
func controlPlaneURLs(flags []string, enrolled string) []string {
	var urls []string
	for _, u := range flags {
		u = strings.TrimRight(strings.TrimSpace(u), "/")
		if u != "" && !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return []string{enrolled}
	}
	return urls
}

func (f *factsCmd) Run(ctx context.Context, logger *slog.Logger, out io.Writer) error {
	prov, err := f.provider(ctx, logger, false, nil, nil)
	if err != nil {
		return err
	}
	req := api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion, AgentVersion: version, Facts: f.facts(prov, logger).Collect(ctx)}
	if req.VMs, err = prov.List(ctx); err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(req)
}

func (v *versionCmd) Run(out io.Writer) error {
	// "nkudo-edge v1.2.3 protocol 1 (commit …, built …, go… linux/amd64)"
	info := buildversion.Get()
	_, err := fmt.Fprintln(out, "nkudo-edge", version, "protocol", api.ProtocolVersion,
		strings.TrimPrefix(info.String(), info.Version+" "))
	return err
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
