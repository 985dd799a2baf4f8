package demo

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/schema"
)

// ServeFunc runs the control plane (store, PKI, API, GitOps loop) on ln
// with its data under dataDir until ctx ends. `nkudo demo` passes the same
// code path `nkudo serve` runs, with demo-friendly intervals.
type ServeFunc func(ctx context.Context, ln net.Listener, dataDir string, logger *slog.Logger) error

// Options configure Run. Manifests (or ManifestsFS), Serve and Hypervisor
// are required.
type Options struct {
	// Manifests is the example repository to start from (manifests-example).
	Manifests string
	// ManifestsFS is the repository to start from when Manifests is ""
	// (nkudo demo passes the embedded manifests-example).
	ManifestsFS fs.FS
	// DataDir holds everything the demo creates; "" = a temporary directory
	// removed at the end. A given directory must be empty or absent.
	DataDir string
	// Listen is the control plane's address ("" = 127.0.0.1 on a free port).
	Listen string
	Serve  ServeFunc
	// Hypervisor is the cloud-hypervisor executable the agents launch; ""
	// means the built-in fake (SelfExecutable must then be set).
	Hypervisor string
	// HypervisorNote is told at the start (why the hypervisor was chosen).
	HypervisorNote string
	// Provider is "" (Cloud Hypervisor, real or fake) or ProviderQEMU: the
	// agents then run real guests under the QEMU at Hypervisor with Accel
	// (kvm or tcg), and the demo builds a small fleet for them instead of
	// Manifests (which may then be empty).
	Provider string
	Accel    string
	// SelfExecutable is the binary that runs the fake hypervisor when
	// invoked as "cloud-hypervisor" (see IsFakeHypervisor).
	SelfExecutable string
	// Out receives the story; JSON prints one event per line instead.
	Out  io.Writer
	JSON bool
	// Once runs the story and returns when every site has converged on the
	// second commit, instead of waiting for ctx to end.
	Once bool
	// Timeout bounds each convergence wait (default 2m).
	Timeout time.Duration
	// Logger receives the components' logs (nil: a file in the data dir).
	Logger *slog.Logger
	// Events, when set, receives every event (tests).
	Events func(Event)
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

const (
	tenantID = "demo"
	repoName = "fleet"
)

// demo is one run of the story.
type demo struct {
	o        Options
	n        *narrator
	log      *slog.Logger
	dir      string
	cpDir    string
	workDir  string
	sites    []string
	desired  model.Desired
	repo     *repo
	pay      *payloads
	httpURL  string // the demo's own HTTP server (git and payloads)
	url      string // the control plane
	token    string
	client   *api.Client
	repoID   string
	secret   string
	caFile   string
	pool     *x509.CertPool
	first    string // the commits of the story
	second   string
	lastPlan string // a plan of the last commit, for the logs example
}

// Run tells the whole story. It returns nil after a clean Ctrl-C (ctx
// ended) or, with Once, after the second commit converged everywhere; it
// returns an error naming what did not happen otherwise. Everything it
// started is stopped before it returns.
func Run(ctx context.Context, o Options) (err error) {
	if (o.Manifests == "" && o.ManifestsFS == nil && o.Provider != ProviderQEMU) || o.Serve == nil || (o.Hypervisor == "" && o.SelfExecutable == "") {
		return errors.New("demo: Manifests, Serve and a hypervisor are required")
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
		if o.Provider == ProviderQEMU {
			o.Timeout = 6 * time.Minute // guests boot under emulation
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	d := &demo{o: o, n: &narrator{w: o.Out, json: o.JSON, now: o.Now, events: o.Events}, pay: &payloads{}}

	dir, cleanup, err := prepareDir(o.DataDir)
	if err != nil {
		return err
	}
	defer cleanup()
	d.dir = dir
	d.cpDir = filepath.Join(dir, "controlplane")
	d.workDir = filepath.Join(dir, "repo")

	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	d.log = o.Logger
	if d.log == nil {
		f, err := os.OpenFile(filepath.Join(logs, "demo.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("demo: log file: %w", err)
		}
		defer f.Close()
		d.log = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}

	hv := o.Hypervisor
	hvKind := "real Cloud Hypervisor " + hv
	if o.Provider == ProviderQEMU {
		hvKind = fmt.Sprintf("QEMU %s (%s): real guests", hv, o.Accel)
	} else if hv == "" {
		if hv, err = linkFakeHypervisor(filepath.Join(dir, "bin"), o.SelfExecutable); err != nil {
			return err
		}
		hvKind = "the fake Cloud Hypervisor (same REST API on a unix socket, boots nothing)"
	}
	d.n.emit(Event{Step: StepStart, Message: "n-kudo demo: everything lives in " + dir,
		Detail: "hypervisor: " + hvKind + "\n" + noteLine(o.HypervisorNote) + "logs:       " + filepath.Join(logs, "demo.log"),
		Data:   map[string]any{"dataDir": dir, "hypervisor": hv, "fake": o.Hypervisor == ""}})

	// The demo's own HTTP server: the git repository (as a forge serves it)
	// and the stand-in payloads.
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: listen: %w", err)
	}
	d.httpURL = "http://" + hln.Addr().String()

	if o.Provider == ProviderQEMU {
		if d.o.Manifests, err = d.qemuFleet(dir, d.httpURL); err != nil {
			hln.Close()
			return err
		}
	}
	if err := d.prepareRepo(o.Hypervisor == "" && o.Provider != ProviderQEMU); err != nil {
		hln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/git/", d.repo.Handler())
	mux.Handle("/images/", d.pay)
	hsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hsrv.Serve(hln)
	defer hsrv.Close()

	if err := d.bootstrap(ctx); err != nil {
		return err
	}

	// From here on, parts run in the background; stop them all on return.
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var bgMu sync.Mutex
	var bgErr error
	background := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				d.log.Error("demo component failed", "component", name, "err", err)
				bgMu.Lock()
				bgErr = errors.Join(bgErr, fmt.Errorf("%s: %w", name, err))
				bgMu.Unlock()
				cancel()
			}
		}()
	}
	defer func() {
		d.n.emit(Event{Step: StepStop, Message: "stopping: agents, control plane, VMMs"})
		cancel()
		wg.Wait()
		stopCtx, stop := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer stop()
		var errs []error
		if o.Provider == ProviderQEMU {
			errs = append(errs, shutdownQEMU(stopCtx, filepath.Join(d.dir, "s")))
		} else {
			var n int
			n, errs = shutdownVMMs(stopCtx, filepath.Join(d.dir, "s"))
			d.log.Info("VMMs stopped", "count", n)
		}
		err = errors.Join(err, bgErr)
		err = errors.Join(append([]error{err}, errs...)...)
	}()

	if err := d.story(runCtx, hv, background); err != nil {
		bgMu.Lock()
		failedBehind := bgErr != nil
		bgMu.Unlock()
		switch {
		case failedBehind:
			return nil // the deferred stop reports the part that failed
		case errors.Is(ctx.Err(), context.Canceled):
			d.n.emit(Event{Step: StepStop, Message: "interrupted"})
			return nil
		}
		return err
	}
	if o.Once {
		d.n.emit(Event{Step: StepDone, Message: "every site converged on both commits; --once is done"})
		return nil
	}
	d.n.emit(Event{Step: StepReady, Message: "the fleet is running; press Ctrl-C to stop everything"})
	<-runCtx.Done()
	return nil
}

// story runs the steps after the bootstrap, in order.
func (d *demo) story(ctx context.Context, hv string, background func(string, func(context.Context) error)) error {
	if err := d.startServer(ctx, background); err != nil {
		return err
	}
	if err := d.startAgents(ctx, hv, background); err != nil {
		return err
	}
	if err := d.firstCommit(ctx); err != nil {
		return err
	}
	if err := d.secondCommit(ctx); err != nil {
		return err
	}
	d.explore(ctx)
	return nil
}

func noteLine(note string) string {
	if note == "" {
		return ""
	}
	return "note:       " + note + "\n"
}

// prepareDir returns the data dir and what removes it (a temp dir only).
func prepareDir(dir string) (string, func(), error) {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "nkudo-demo-")
		if err != nil {
			return "", nil, fmt.Errorf("demo: temp dir: %w", err)
		}
		return tmp, func() { os.RemoveAll(tmp) }, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, fmt.Errorf("demo: data dir: %w", err)
	}
	entries, err := os.ReadDir(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return "", nil, fmt.Errorf("demo: data dir: %w", err)
		}
	case err != nil:
		return "", nil, fmt.Errorf("demo: data dir: %w", err)
	case len(entries) > 0:
		return "", nil, fmt.Errorf("demo: data dir %s is not empty; the demo starts from scratch, give it a new or empty directory", abs)
	}
	return abs, func() {}, nil
}

// prepareRepo validates the manifests, copies them into a new git
// repository (pointing their artifacts at the demo's payload server when
// the fake hypervisor runs) and commits.
func (d *demo) prepareRepo(fake bool) error {
	src, label := d.o.ManifestsFS, "the built-in manifests-example"
	if d.o.Manifests != "" {
		src, label = os.DirFS(d.o.Manifests), d.o.Manifests
	}
	desired, err := schema.Load(src)
	if err != nil {
		return fmt.Errorf("manifests %s are not valid: %w", label, err)
	}
	var sites []string
	for _, s := range desired.Sites {
		sites = append(sites, s.Name)
	}
	sort.Strings(sites)
	d.sites = sites
	d.n.emit(Event{Step: StepValidate, Message: fmt.Sprintf("validated %s: %d sites, %d VMs, schema %s",
		label, len(desired.Sites), len(desired.VMs), model.APIVersion),
		Detail: "sites: " + strings.Join(sites, ", "),
		Data:   map[string]any{"sites": sites, "vms": len(desired.VMs)}})

	d.repo, err = initRepo(d.workDir, src)
	if err != nil {
		return err
	}
	detail := ""
	if fake {
		n, err := d.pay.rewriteArtifacts(d.workDir, desired, d.httpURL)
		if err != nil {
			return err
		}
		detail = fmt.Sprintf("the %d image/kernel/firmware URLs now point at the demo's local mirror %s/images/ (with matching sha256)", n, d.httpURL)
	}
	// Reload: the change commit copies the rewritten artifact references.
	if d.desired, err = schema.Load(os.DirFS(d.workDir)); err != nil {
		return fmt.Errorf("rewritten manifests: %w", err)
	}
	sha, err := d.repo.commit("Import the example fleet", d.o.Now())
	if err != nil {
		return err
	}
	d.first = sha
	d.n.emit(Event{Step: StepRepo, Commit: sha, Message: fmt.Sprintf("git repository %s, commit %s \"Import the example fleet\"", d.workDir, short(sha)),
		Detail: detail, Data: map[string]any{"dir": d.workDir}})
	return nil
}
