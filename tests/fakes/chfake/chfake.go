// Package chfake is a fake Cloud Hypervisor VMM: it serves the v53 REST API
// (http://localhost/api/v1/...) on a unix socket with the real program's
// state machine, status codes and quirks, and boots nothing. The
// tests/fakes/cloud-hypervisor program wraps it so the agent can launch it
// exactly like the real binary; tests may also run it in-process.
//
// Faults are scriptable (fail the Nth call of an endpoint, delay, hang, exit
// now, ignore the power button) through Config.Faults, a control file that is
// re-read on every request, or the CHFAKE_FAULTS environment variable. Every
// request can be appended to a JSON-lines request log so tests can prove what
// was and was not called.
package chfake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Version is what the fake reports as its version, like v53.0 does.
const Version = "v53.0"

// Duration is a time.Duration that reads "1.5s" style strings from JSON.
type Duration time.Duration

// UnmarshalJSON accepts a Go duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration %s: want a string like \"2s\" or nanoseconds", b)
	}
	*d = Duration(n)
	return nil
}

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Fault scripts one misbehaviour. A fault applies to calls of Endpoint
// ("vm.boot", or "*" for every endpoint); Nth (1-based, counted per endpoint
// since the process started) limits it to one call, zero means every call.
// Effects apply in this order: Delay, Exit, Hang, then Status/Error or Ignore.
type Fault struct {
	Endpoint string   `json:"endpoint"`
	Nth      int      `json:"nth,omitempty"`
	Delay    Duration `json:"delay,omitempty"`
	// Exit terminates the VMM before it answers (the process exits with code 1).
	Exit bool `json:"exit,omitempty"`
	// Hang never answers (until the process dies or the server is closed).
	Hang bool `json:"hang,omitempty"`
	// Status, when non-zero, is returned with Error as the error chain body.
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	// Ignore answers as usual but has no effect (a guest that ignores the
	// ACPI power button, for example).
	Ignore bool `json:"ignore,omitempty"`
}

// Config configures a Server. The zero value works.
type Config struct {
	// Faults scripted from the start.
	Faults []Fault
	// ControlFile, when set, is a JSON file {"faults": [...]} read before
	// every request; its faults add to Faults. A missing file means none.
	ControlFile string
	// RequestLog, when set, is a file every request is appended to as one JSON line.
	RequestLog string
	// NoShutdown mirrors --no-shutdown: a guest power-off stops the VM but the
	// VMM keeps running. Without it the VMM exits, as the real one does.
	NoShutdown bool
	// PowerOffDelay is how long the simulated guest takes to power off after
	// the ACPI power button. Zero powers off at once.
	PowerOffDelay time.Duration
	// SkipFileChecks disables the boot-time check that payload and disk files exist.
	SkipFileChecks bool
	// PID is reported by vmm.ping; zero means os.Getpid().
	PID int
}

// LogEntry is one line of the request log.
type LogEntry struct {
	Time     time.Time       `json:"time"`
	PID      int             `json:"pid"`
	Socket   string          `json:"socket"`
	Method   string          `json:"method"`
	Endpoint string          `json:"endpoint"`
	Status   int             `json:"status"`
	Body     json.RawMessage `json:"body,omitempty"`
	Fault    string          `json:"fault,omitempty"`
	// Received marks the extra line written when a delayed or hanging
	// request arrives (Status 0), so tests can see calls still in flight.
	Received bool `json:"received,omitempty"`
}

// VM states as Cloud Hypervisor names them.
const (
	StateCreated  = "Created"
	StateRunning  = "Running"
	StateShutdown = "Shutdown"
	StatePaused   = "Paused"
)

// Server is one fake VMM. Create it with New.
type Server struct {
	cfg    Config
	socket string

	mu       sync.Mutex
	calls    map[string]int
	config   map[string]any // nil: no VM created
	booted   bool           // a Vm exists (Running or Paused)
	paused   bool
	actual   int64 // memory_actual_size while booted
	logMu    sync.Mutex
	done     chan struct{}
	doneOnce sync.Once
	exitCode int
	hangs    chan struct{}
	lockFile *os.File
}

// New returns a server; call Serve or ListenAndServe to run it.
func New(cfg Config) *Server {
	if cfg.PID == 0 {
		cfg.PID = os.Getpid()
	}
	return &Server{cfg: cfg, calls: map[string]int{}, done: make(chan struct{}), hangs: make(chan struct{})}
}

// Done is closed when the VMM has shut down (vmm.shutdown, a guest power-off
// without NoShutdown, or an Exit fault). ExitCode then says how it ended.
func (s *Server) Done() <-chan struct{} { return s.done }

// ExitCode is the exit status the VMM process should end with.
func (s *Server) ExitCode() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exitCode
}

// Calls reports how many requests an endpoint has received.
func (s *Server) Calls(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[endpoint]
}

// State reports the VM state as vm.info would ("" when nothing is created).
func (s *Server) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stateLocked()
}

func (s *Server) stateLocked() string {
	switch {
	case s.config == nil:
		return ""
	case s.booted && s.paused:
		return StatePaused
	case s.booted:
		return StateRunning
	}
	return StateCreated
}

// PowerOff simulates the guest powering itself off (as a guest poweroff
// command would): the VMM exits unless NoShutdown is set.
func (s *Server) PowerOff() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.guestPowerOffLocked()
}

func (s *Server) guestPowerOffLocked() {
	if !s.booted {
		return
	}
	if s.cfg.NoShutdown {
		s.booted, s.paused = false, false
		return
	}
	s.booted, s.paused, s.config = false, false, nil
	s.finishLocked(0)
}

func (s *Server) finishLocked(code int) {
	s.doneOnce.Do(func() {
		s.exitCode = code
		close(s.done)
	})
}

// ErrSocketInUse is returned by ListenAndServe when another live VMM holds the socket's lock.
var ErrSocketInUse = errors.New("ApiSocketInUse: the API socket is in use by another process")

// ListenAndServe takes the v53 lock on "<path>.lock", removes a stale socket
// left by a dead process, binds the socket and serves until ctx ends or the
// VMM shuts down. The socket and lock are removed on return.
func (s *Server) ListenAndServe(ctx context.Context, path string) error {
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open api socket lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return fmt.Errorf("%w: %s", ErrSocketInUse, path)
	}
	s.lockFile = lock
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		lock.Close()
		return fmt.Errorf("remove stale api socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		lock.Close()
		return fmt.Errorf("bind api socket: %w", err)
	}
	defer func() {
		os.Remove(path)
		os.Remove(path + ".lock")
		lock.Close()
	}()
	return s.Serve(ctx, ln, path)
}

// Serve answers API requests on ln until ctx ends or the VMM shuts down.
// socket only labels request-log lines.
func (s *Server) Serve(ctx context.Context, ln net.Listener, socket string) error {
	s.socket = socket
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case <-s.done:
	case err := <-errc:
		return err
	}
	close(s.hangs)
	// Let the answer to vmm.shutdown reach the client before closing.
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	return nil
}

var getEndpoints = map[string]bool{"vmm.ping": true, "vm.info": true, "vm.counters": true}

// putEndpoints lists every PUT endpoint of the v53 API; true marks those
// that take no body (a body is a 400).
var putEndpoints = map[string]bool{
	"vmm.shutdown": true, "vm.create": false, "vm.delete": true, "vm.boot": true,
	"vm.pause": true, "vm.resume": true, "vm.shutdown": true, "vm.reboot": true,
	"vm.power-button": true, "vm.nmi": true, "vm.resize": false, "vm.resize-disk": false,
	"vm.resize-zone": false, "vm.add-device": false, "vm.remove-device": false,
	"vm.add-disk": false, "vm.add-fs": false, "vm.add-generic-vhost-user": false,
	"vm.add-pmem": false, "vm.add-net": false, "vm.add-vsock": false, "vm.add-vdpa": false,
	"vm.add-user-device": false, "vm.snapshot": false, "vm.coredump": false,
	"vm.restore": false, "vm.receive-migration": false, "vm.send-migration": false,
}

type controlFile struct {
	Faults []Fault `json:"faults"`
}

func (s *Server) faults() ([]Fault, string) {
	fs := append([]Fault(nil), s.cfg.Faults...)
	if s.cfg.ControlFile == "" {
		return fs, ""
	}
	b, err := os.ReadFile(s.cfg.ControlFile)
	if errors.Is(err, os.ErrNotExist) {
		return fs, ""
	}
	if err != nil {
		return fs, fmt.Sprintf("read control file: %v", err)
	}
	var cf controlFile
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &cf); err != nil {
			return fs, fmt.Sprintf("control file %s: %v", s.cfg.ControlFile, err)
		}
	}
	return append(fs, cf.Faults...), ""
}

type response struct {
	status int
	body   any
}

func errResp(status int, chain ...string) response { return response{status: status, body: chain} }

// ServeHTTP implements the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	endpoint, ok := strings.CutPrefix(r.URL.Path, "/api/v1/")
	body, _ := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	entry := LogEntry{Time: time.Now().UTC(), PID: s.cfg.PID, Socket: s.socket, Method: r.Method, Endpoint: endpoint}
	if len(bytes.TrimSpace(body)) > 0 {
		if json.Valid(body) {
			entry.Body = json.RawMessage(body)
		} else {
			entry.Body, _ = json.Marshal(string(body))
		}
	}
	_, isGet := getEndpoints[endpoint]
	noBody, isPut := putEndpoints[endpoint]
	var resp response
	switch {
	case !ok || (!isGet && !isPut):
		resp = response{status: http.StatusNotFound}
	case isGet && r.Method != http.MethodGet, isPut && r.Method != http.MethodPut:
		resp = response{status: http.StatusBadRequest}
	case isPut && noBody && len(body) > 0:
		resp = response{status: http.StatusBadRequest}
	default:
		s.mu.Lock()
		s.calls[endpoint]++
		n := s.calls[endpoint]
		s.mu.Unlock()
		faults, ferr := s.faults()
		if ferr != "" {
			resp = errResp(http.StatusInternalServerError, "fake: "+ferr)
			break
		}
		var handled bool
		resp, handled, entry.Fault = s.applyFaults(r.Context(), faults, endpoint, n, &entry)
		if !handled {
			ignore := entry.Fault == "ignore"
			resp = s.handle(endpoint, body, ignore)
		}
	}
	entry.Status = resp.status
	if entry.Fault != "exit" { // already logged before the VMM went away
		s.logRequest(entry)
	}
	w.Header().Set("Server", "Cloud Hypervisor API")
	w.Header().Set("Content-Type", "application/json")
	if resp.body == nil {
		w.WriteHeader(resp.status)
	} else {
		b, _ := json.Marshal(resp.body)
		w.WriteHeader(resp.status)
		w.Write(b)
	}
	if endpoint == "vmm.shutdown" && resp.status == http.StatusOK {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		s.mu.Lock()
		s.finishLocked(0)
		s.mu.Unlock()
	}
}

func (s *Server) applyFaults(ctx context.Context, faults []Fault, endpoint string, n int, entry *LogEntry) (response, bool, string) {
	for _, f := range faults {
		if f.Endpoint != endpoint && f.Endpoint != "*" {
			continue
		}
		if f.Nth != 0 && f.Nth != n {
			continue
		}
		if f.Delay > 0 || f.Hang {
			arrived := *entry
			arrived.Received = true
			s.logRequest(arrived)
		}
		if f.Delay > 0 {
			select {
			case <-time.After(time.Duration(f.Delay)):
			case <-ctx.Done():
			case <-s.hangs:
			}
		}
		if f.Exit {
			entry.Fault = "exit"
			entry.Status = 0
			s.logRequest(*entry)
			s.mu.Lock()
			s.finishLocked(1)
			s.mu.Unlock()
			// Never answer: the process is going away.
			select {
			case <-ctx.Done():
			case <-s.hangs:
			}
			return response{status: http.StatusServiceUnavailable}, true, "exit"
		}
		if f.Hang {
			entry.Fault = "hang"
			select {
			case <-ctx.Done():
			case <-s.hangs:
			}
			return response{status: http.StatusServiceUnavailable}, true, "hang"
		}
		if f.Status != 0 {
			msg := f.Error
			if msg == "" {
				msg = "fake: injected failure"
			}
			return errResp(f.Status, "Error from API", msg), true, "status"
		}
		if f.Ignore {
			return response{}, false, "ignore"
		}
	}
	return response{}, false, ""
}

func (s *Server) logRequest(e LogEntry) {
	if s.cfg.RequestLog == "" {
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	b = append(b, '\n')
	s.logMu.Lock()
	defer s.logMu.Unlock()
	f, err := os.OpenFile(s.cfg.RequestLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	f.Write(b)
	f.Close()
}

const mib = 1 << 20

func (s *Server) handle(endpoint string, body []byte, ignore bool) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch endpoint {
	case "vmm.ping":
		return response{status: 200, body: map[string]any{
			"build_version": Version + "-fake", "version": strings.TrimPrefix(Version, "v"),
			"pid": s.cfg.PID, "features": []string{"kvm"},
		}}
	case "vmm.shutdown":
		// Stops and deletes the VM, then the process exits (after answering).
		s.booted, s.paused, s.config = false, false, nil
		return response{status: 200}
	case "vm.info":
		if s.config == nil {
			return errResp(404, "Error from API", "The VM info is not available", "VM is not created")
		}
		return response{status: 200, body: map[string]any{
			"config": s.config, "state": s.stateLocked(), "memory_actual_size": s.memoryActualLocked(),
			"device_tree": map[string]any{},
		}}
	case "vm.counters":
		if !s.booted {
			return errResp(500, "Error from API", "Error getting VM counters", "VM is not running")
		}
		return response{status: 200, body: map[string]any{}}
	case "vm.create":
		var cfg map[string]any
		if err := json.Unmarshal(body, &cfg); err != nil || cfg == nil {
			return response{status: 400}
		}
		if s.config != nil {
			return errResp(500, "Error from API", "The VM could not be created", "VM is already created")
		}
		s.config = withDefaults(cfg)
		return response{status: 204}
	case "vm.boot":
		if s.config == nil {
			return errResp(404, "Error from API", "The VM could not boot", "VM is not created")
		}
		if s.booted {
			return errResp(500, "Error from API", "The VM could not boot", "VM is already created")
		}
		if err := s.validateLocked(); err != nil {
			return errResp(500, "Error from API", "The VM could not boot", err.Error())
		}
		s.touchSerialLocked()
		s.booted, s.paused = true, false
		size, _, hotplugged := memoryOf(s.config)
		s.actual = size + hotplugged
		return response{status: 204}
	case "vm.shutdown":
		if !s.booted {
			return errResp(500, "Error from API", "The VM could not shut down", "VM is not running")
		}
		// Hard stop: the Vm is dropped, the config kept; vm.info then says Created.
		s.booted, s.paused = false, false
		return response{status: 204}
	case "vm.power-button":
		if !s.booted {
			return errResp(500, "Error from API", "Error triggering power button", "VM is not running")
		}
		if !ignore {
			if s.cfg.PowerOffDelay <= 0 {
				s.guestPowerOffLocked()
			} else {
				time.AfterFunc(s.cfg.PowerOffDelay, s.PowerOff)
			}
		}
		return response{status: 204}
	case "vm.reboot", "vm.nmi":
		if !s.booted {
			return errResp(500, "Error from API", "The VM could not "+strings.TrimPrefix(endpoint, "vm."), "VM is not running")
		}
		return response{status: 204}
	case "vm.pause":
		if !s.booted || s.paused {
			return errResp(500, "Error from API", "The VM could not pause", "VM is not running")
		}
		s.paused = true
		return response{status: 204}
	case "vm.resume":
		if !s.booted || !s.paused {
			return errResp(500, "Error from API", "The VM could not resume", "VM is not paused")
		}
		s.paused = false
		return response{status: 204}
	case "vm.delete":
		// Deleting nothing is a no-op; a running VM is shut down first.
		s.booted, s.paused, s.config = false, false, nil
		return response{status: 204}
	case "vm.resize":
		return s.resizeLocked(body)
	}
	return errResp(500, "Error from API", "fake: "+endpoint+" is not implemented")
}

type resizeReq struct {
	DesiredVCPUs   *int   `json:"desired_vcpus"`
	DesiredRAM     *int64 `json:"desired_ram"`
	DesiredBalloon *int64 `json:"desired_balloon"`
}

func (s *Server) resizeLocked(body []byte) response {
	var req resizeReq
	if err := json.Unmarshal(body, &req); err != nil {
		return response{status: 400}
	}
	if s.config == nil {
		return errResp(404, "Error from API", "The VM could not be resized", "VM is not created")
	}
	cpus, _ := s.config["cpus"].(map[string]any)
	maxV := int(num(cpus["max_vcpus"]))
	if !s.booted {
		// Not booted: v53 only edits the stored config; limits bite at vm.boot.
		if req.DesiredVCPUs != nil {
			cpus["boot_vcpus"] = *req.DesiredVCPUs
		}
		if req.DesiredRAM != nil {
			mem, _ := s.config["memory"].(map[string]any)
			mem["size"] = *req.DesiredRAM
		}
		return response{status: 204}
	}
	if req.DesiredVCPUs != nil {
		v := *req.DesiredVCPUs
		if v < 1 || v > maxV {
			return errResp(500, "Error from API", "The VM could not be resized",
				fmt.Sprintf("Error resizing VM: desired vCPUs %d out of range 1..%d (max_vcpus)", v, maxV))
		}
	}
	if req.DesiredRAM != nil {
		size, hotplug, _ := memoryOf(s.config)
		want := *req.DesiredRAM
		switch {
		case want != s.actual && hotplug == 0:
			return errResp(500, "Error from API", "The VM could not be resized", "Memory hotplug is not enabled (hotplug_size is 0)")
		case want > size+hotplug:
			return errResp(500, "Error from API", "The VM could not be resized",
				fmt.Sprintf("Invalid memory size: desired %d exceeds size+hotplug_size %d", want, size+hotplug))
		case want < s.actual:
			return errResp(500, "Error from API", "The VM could not be resized", "Invalid memory size: ACPI memory hotplug cannot shrink memory")
		case want%(128*mib) != 0 && want != s.actual:
			return errResp(500, "Error from API", "The VM could not be resized", "Invalid memory size: not a multiple of 128 MiB")
		}
	}
	if req.DesiredVCPUs != nil {
		cpus["boot_vcpus"] = *req.DesiredVCPUs
	}
	if req.DesiredRAM != nil {
		size, _, _ := memoryOf(s.config)
		s.actual = *req.DesiredRAM
		mem, _ := s.config["memory"].(map[string]any)
		mem["hotplugged_size"] = s.actual - size
	}
	return response{status: 204}
}

func (s *Server) memoryActualLocked() int64 {
	if s.booted {
		return s.actual
	}
	size, _, hotplugged := memoryOf(s.config)
	return size + hotplugged
}

func memoryOf(cfg map[string]any) (size, hotplug, hotplugged int64) {
	mem, _ := cfg["memory"].(map[string]any)
	return num(mem["size"]), num(mem["hotplug_size"]), num(mem["hotplugged_size"])
}

func num(v any) int64 {
	switch x := v.(type) {
	case float64:
		return int64(x)
	case int:
		return int64(x)
	case int64:
		return x
	}
	return 0
}

// withDefaults fills what v53 fills for a config created over the API.
func withDefaults(cfg map[string]any) map[string]any {
	if _, ok := cfg["cpus"].(map[string]any); !ok {
		cfg["cpus"] = map[string]any{"boot_vcpus": 1, "max_vcpus": 1}
	}
	mem, ok := cfg["memory"].(map[string]any)
	if !ok {
		mem = map[string]any{"size": int64(512 * mib)}
		cfg["memory"] = mem
	}
	if _, ok := mem["hotplug_size"]; !ok {
		mem["hotplug_size"] = nil
	}
	if _, ok := cfg["console"].(map[string]any); !ok {
		cfg["console"] = map[string]any{"mode": "Tty"}
	}
	if _, ok := cfg["serial"].(map[string]any); !ok {
		cfg["serial"] = map[string]any{"mode": "Null"}
	}
	return cfg
}

// validateLocked is VmConfig::validate as far as the fake can tell: it runs
// at boot because v53 does not validate configs on the API path.
func (s *Server) validateLocked() error {
	payload, _ := s.config["payload"].(map[string]any)
	kernel, _ := payload["kernel"].(string)
	firmware, _ := payload["firmware"].(string)
	igvm, _ := payload["igvm"].(string)
	if kernel == "" && firmware == "" && igvm == "" {
		return errors.New("Error validating configuration: no kernel, firmware or igvm payload")
	}
	cpus, _ := s.config["cpus"].(map[string]any)
	boot, maxV := num(cpus["boot_vcpus"]), num(cpus["max_vcpus"])
	if boot < 1 || boot > maxV {
		return fmt.Errorf("Error validating configuration: boot_vcpus %d must be in 1..max_vcpus (%d)", boot, maxV)
	}
	size, _, _ := memoryOf(s.config)
	if size <= 0 || size%(4096) != 0 {
		return fmt.Errorf("Error validating configuration: memory size %d is not a positive multiple of the page size", size)
	}
	if s.cfg.SkipFileChecks {
		return nil
	}
	for _, p := range []string{kernel, firmware} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("Error loading payload: %v", err)
		}
	}
	disks, _ := s.config["disks"].([]any)
	for i, d := range disks {
		dm, _ := d.(map[string]any)
		p, _ := dm["path"].(string)
		if p == "" {
			return fmt.Errorf("Error creating disk %d: no path", i)
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("Error opening disk file: %v", err)
		}
	}
	return nil
}

func (s *Server) touchSerialLocked() {
	serial, _ := s.config["serial"].(map[string]any)
	if mode, _ := serial["mode"].(string); mode != "File" {
		return
	}
	if p, _ := serial["file"].(string); p != "" {
		if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640); err == nil {
			fmt.Fprintf(f, "fake cloud-hypervisor %s: guest booted (nothing runs)\n", Version)
			f.Close()
		}
	}
}

// ReadRequestLog parses a request log written by any number of fakes.
func ReadRequestLog(path string) ([]LogEntry, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read request log: %w", err)
	}
	var out []LogEntry
	for i, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e LogEntry
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("request log %s:%d: %w", path, i+1, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// FaultsFromEnv parses CHFAKE_FAULTS-style JSON: a list of faults.
func FaultsFromEnv(v string) ([]Fault, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var fs []Fault
	if err := json.Unmarshal([]byte(v), &fs); err != nil {
		return nil, fmt.Errorf("CHFAKE_FAULTS: %w", err)
	}
	return fs, nil
}
