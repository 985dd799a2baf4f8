// Command netbird is a fake NetBird client (v0.77.1) for tests. It answers
// `up`, `down`, `status [--json] [--check live|ready|startup]` and `version`
// with the real program's messages, exit codes and JSON shape, keeping its
// state in NBFAKE_STATE_DIR/state.json (default: the system temp dir).
//
// Tests script it by writing state.json, for example
// {"daemonDown": true} (the daemon is not running) or
// {"loginError": "invalid setup key"} (up fails), or by setting
// NBFAKE_DAEMON_DOWN=1. Each invocation's arguments are appended to
// NBFAKE_STATE_DIR/calls.log with any setup key replaced, so tests can check
// what was called without the secret reaching a file.
//
// When the management URL is a loopback address, `up` logs in at the fake
// management server (tests/fakes/netbird-management) by posting the setup
// key and this peer's WireGuard public key to its /fake/login, so the
// server registers the peer, puts it in the key's auto_groups and consumes
// the key, as the real login over gRPC does. NBFAKE_CA_FILE names a PEM
// file of roots to trust for an https management URL; NBFAKE_HOSTNAME is
// the hostname the peer registers with (default: the machine's).
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const version = "0.77.1"

type state struct {
	DaemonDown    bool   `json:"daemonDown,omitempty"`
	Status        string `json:"status,omitempty"` // Idle|Connecting|Connected|NeedsLogin|LoginFailed|SessionExpired
	ManagementURL string `json:"managementURL,omitempty"`
	SetupKeyUsed  bool   `json:"setupKeyUsed,omitempty"`
	LoginError    string `json:"loginError,omitempty"`
	IP            string `json:"ip,omitempty"`
	Peers         []peer `json:"peers,omitempty"`
	SignalDown    bool   `json:"signalDown,omitempty"`
	// PublicKey is the peer's WireGuard public key, made on the first up.
	PublicKey string `json:"publicKey,omitempty"`
	// PeerID is the ID the fake management server gave this peer.
	PeerID string `json:"peerId,omitempty"`
}

type peer struct {
	FQDN      string `json:"fqdn"`
	IP        string `json:"netbirdIp"`
	Connected bool   `json:"connected"`
}

func main() { os.Exit(run(os.Args[1:])) }

func dir() string {
	if d := os.Getenv("NBFAKE_STATE_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "nbfake")
}

func load() (state, error) {
	var st state
	b, err := os.ReadFile(filepath.Join(dir(), "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		st.Status = "NeedsLogin"
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("fake state: %w", err)
	}
	if st.Status == "" {
		st.Status = "NeedsLogin"
	}
	return st, nil
}

func save(st state) error {
	if err := os.MkdirAll(dir(), 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	tmp := filepath.Join(dir(), "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir(), "state.json"))
}

func logCall(args []string) {
	red := make([]string, len(args))
	for i, a := range args {
		red[i] = a
		if i > 0 && (args[i-1] == "--setup-key" || args[i-1] == "-k") {
			red[i] = "REDACTED"
		}
		if strings.HasPrefix(a, "--setup-key=") {
			red[i] = "--setup-key=REDACTED"
		}
	}
	_ = os.MkdirAll(dir(), 0o755)
	f, err := os.OpenFile(filepath.Join(dir(), "calls.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil {
		fmt.Fprintln(f, strings.Join(red, " "))
		f.Close()
	}
}

func fail(format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "Error: "+format+"\n", a...)
	return 1
}

func run(args []string) int {
	logCall(args)
	if len(args) == 0 {
		fmt.Println("Usage: netbird [command]")
		return 0
	}
	cmd, rest := args[0], args[1:]
	flags := map[string]string{}
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "-") {
			flags[k] = v
			continue
		}
		switch a {
		case "--json", "--ipv4", "-F", "--foreground-mode", "--no-browser":
			flags[a] = "true"
		default:
			if strings.HasPrefix(a, "-") && i+1 < len(rest) {
				flags[a] = rest[i+1]
				i++
			}
		}
	}
	get := func(names ...string) string {
		for _, n := range names {
			if v, ok := flags[n]; ok {
				return v
			}
		}
		for _, n := range names {
			if strings.HasPrefix(n, "--") {
				env := "NB_" + strings.ToUpper(strings.ReplaceAll(strings.TrimPrefix(n, "--"), "-", "_"))
				if v := os.Getenv(env); v != "" {
					return v
				}
			}
		}
		return ""
	}
	if cmd == "version" {
		fmt.Println(version)
		return 0
	}
	st, err := load()
	if err != nil {
		return fail("%v", err)
	}
	if os.Getenv("NBFAKE_DAEMON_DOWN") != "" {
		st.DaemonDown = true
	}
	daemonErr := func() int {
		return fail("failed to connect to daemon error: context deadline exceeded\n" +
			"If the daemon is not running please run: \nnetbird service install \nnetbird service start")
	}
	switch cmd {
	case "up":
		if st.DaemonDown {
			return daemonErr()
		}
		if st.Status == "Connected" {
			fmt.Println("Already connected")
			return 0
		}
		key := get("--setup-key", "-k")
		if key == "" && !st.SetupKeyUsed {
			return fail("login failed: no setup key given and the peer is not registered (NeedsLogin)")
		}
		if st.LoginError != "" {
			st.Status = "LoginFailed"
			_ = save(st)
			return fail("login failed: rpc error: code = PermissionDenied desc = %s", st.LoginError)
		}
		if m := get("--management-url", "-m"); m != "" {
			st.ManagementURL = m
		}
		if st.ManagementURL == "" {
			st.ManagementURL = "https://api.netbird.io:443"
		}
		if st.PublicKey == "" {
			var b [32]byte
			_, _ = rand.Read(b[:])
			st.PublicKey = base64.StdEncoding.EncodeToString(b[:])
		}
		if loopback(st.ManagementURL) {
			id, ip, err := login(st, key)
			if err != nil {
				st.Status = "LoginFailed"
				_ = save(st)
				return fail("login failed: rpc error: code = PermissionDenied desc = %v", err)
			}
			st.PeerID, st.IP = id, ip+"/16"
		}
		st.SetupKeyUsed = true
		st.Status = "Connected"
		if st.IP == "" {
			st.IP = "100.64.0.33/16"
		}
		if err := save(st); err != nil {
			return fail("%v", err)
		}
		fmt.Println("Connected")
		return 0
	case "down":
		if st.DaemonDown {
			return daemonErr()
		}
		st.Status = "Idle"
		if err := save(st); err != nil {
			return fail("%v", err)
		}
		fmt.Println("Disconnected")
		return 0
	case "status":
		if st.DaemonDown {
			return daemonErr()
		}
		if check := get("--check"); check != "" {
			return statusCheck(st, check)
		}
		if flags["--json"] == "true" {
			b, _ := json.MarshalIndent(overview(st), "", "  ")
			fmt.Println(string(b))
			return 0
		}
		if flags["--ipv4"] == "true" {
			ip, _, _ := strings.Cut(st.IP, "/")
			fmt.Println(ip)
			return 0
		}
		switch st.Status {
		case "NeedsLogin", "LoginFailed", "SessionExpired":
			// The real client prints help and exits 0 in these states.
			fmt.Println("Daemon status: " + st.Status + "\n\nRun UP command to log in with SSO (interactive login):\n\n netbird up")
			return 0
		}
		fmt.Printf("Daemon version: %s\nCLI version: %s\nManagement: %s\nSignal: %s\nNetBird IP: %s\n",
			version, version, conn(st.Status == "Connected"), conn(st.Status == "Connected" && !st.SignalDown), st.IP)
		return 0
	}
	return fail("unknown command %q for \"netbird\"", cmd)
}

func conn(ok bool) string {
	if ok {
		return "Connected"
	}
	return "Disconnected"
}

func statusCheck(st state, check string) int {
	switch check {
	case "live":
		return 0
	case "ready":
		switch st.Status {
		case "NeedsLogin", "LoginFailed", "SessionExpired":
			return fail("daemon is not ready: %s", st.Status)
		}
		return 0
	case "startup":
		if st.Status != "Connected" || st.SignalDown {
			return fail("startup check failed: management or signal not connected")
		}
		return 0
	}
	return fail("invalid check %q: want live, ready or startup", check)
}

func overview(st state) map[string]any {
	connected := st.Status == "Connected"
	details := []map[string]any{}
	nConnected := 0
	for _, p := range st.Peers {
		status, ctype := "Idle", "-"
		if p.Connected && connected {
			status, ctype = "Connected", "P2P"
			nConnected++
		}
		details = append(details, map[string]any{
			"fqdn": p.FQDN, "netbirdIp": p.IP, "publicKey": "fakekey" + p.FQDN + "=", "status": status,
			"lastStatusUpdate": time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), "connectionType": ctype,
			"iceCandidateType":     map[string]string{"local": "", "remote": ""},
			"iceCandidateEndpoint": map[string]string{"local": "", "remote": ""},
			"relayAddress":         "", "lastWireguardHandshake": time.Time{}, "transferReceived": 0,
			"transferSent": 0, "latency": 0, "quantumResistance": false, "networks": []string{},
		})
	}
	mgmtErr, sigErr := "", ""
	if !connected {
		mgmtErr = "not connected"
		sigErr = "not connected"
	}
	if st.SignalDown {
		sigErr = "signal unreachable"
	}
	ip := ""
	if connected {
		ip = st.IP
	}
	return map[string]any{
		"peers":               map[string]any{"total": len(st.Peers), "connected": nConnected, "details": details},
		"cliVersion":          version,
		"daemonVersion":       version,
		"management":          map[string]any{"url": st.ManagementURL, "connected": connected, "error": mgmtErr},
		"signal":              map[string]any{"url": "https://signal.netbird.io:443", "connected": connected && !st.SignalDown, "error": sigErr},
		"relays":              map[string]any{"total": 0, "available": 0, "details": []any{}},
		"netbirdIp":           ip,
		"publicKey":           publicKey(st),
		"usesKernelInterface": true,
		"wireguardPort":       51820,
		"fqdn":                "edge.netbird.cloud",
		"quantumResistance":   false, "quantumResistancePermissive": false,
		"networks": []string{}, "forwardingRules": 0, "dnsServers": []any{}, "events": []any{},
		"lazyConnectionEnabled": false, "profileName": "default",
		"sshServer":    map[string]any{"enabled": false, "sessions": []any{}},
		"daemonStatus": st.Status,
	}
}

func publicKey(st state) string {
	if st.PublicKey == "" {
		return "fakepublickey="
	}
	return st.PublicKey
}

// loopback reports whether the management URL points at this machine, so
// the fake never reaches a real NetBird server.
func loopback(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

// login registers the peer at the fake management server, or logs a known
// peer in again; it answers the peer's ID and NetBird IP.
func login(st state, key string) (string, string, error) {
	host := os.Getenv("NBFAKE_HOSTNAME")
	if host == "" {
		host, _ = os.Hostname()
	}
	body, _ := json.Marshal(map[string]string{"setupKey": key, "publicKey": st.PublicKey, "hostname": host})
	client := &http.Client{Timeout: 20 * time.Second}
	if ca := os.Getenv("NBFAKE_CA_FILE"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return "", "", err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return "", "", fmt.Errorf("no certificates in %s", ca)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	resp, err := client.Post(strings.TrimSuffix(st.ManagementURL, "/")+"/fake/login", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", "", fmt.Errorf("connect to management: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		PeerID  string `json:"peerId"`
		IP      string `json:"ip"`
		Message string `json:"message"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", "", fmt.Errorf("management answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", errors.New(out.Message)
	}
	return out.PeerID, out.IP, nil
}
