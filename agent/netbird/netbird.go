// Package netbird drives the NetBird client CLI on the edge host: `netbird
// up` with the site's setup key, `netbird status --json` parsed into host
// facts, and `netbird status --check ready` as the probe of the management
// connection. Failures become facts, never crashes. The setup key is a
// secret: it is passed on the command line only and never logged or
// included in an error.
package netbird

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/nkudo/nkudo/api"
)

// Client runs the netbird CLI.
type Client struct {
	// Binary is the netbird executable; empty means "netbird" from PATH.
	Binary string
	Logger *slog.Logger
	// Timeout bounds each command; zero means 30s (down alone can take 20s).
	Timeout time.Duration
	// Env is added to the environment of every netbird command.
	Env []string
}

// Status is the part of `netbird status --json` the agent uses.
type Status struct {
	DaemonStatus  string     `json:"daemonStatus"`
	DaemonVersion string     `json:"daemonVersion"`
	CLIVersion    string     `json:"cliVersion"`
	NetbirdIP     string     `json:"netbirdIp"` // CIDR form, e.g. 100.64.0.33/16
	FQDN          string     `json:"fqdn"`
	Management    Connection `json:"management"`
	Signal        Connection `json:"signal"`
	Peers         struct {
		Total     int    `json:"total"`
		Connected int    `json:"connected"`
		Details   []Peer `json:"details"`
	} `json:"peers"`
}

// Connection is the management or signal connection state.
type Connection struct {
	URL       string `json:"url"`
	Connected bool   `json:"connected"`
	Error     string `json:"error"`
}

// Peer is one remote peer.
type Peer struct {
	FQDN           string `json:"fqdn"`
	NetbirdIP      string `json:"netbirdIp"`
	Status         string `json:"status"`
	ConnectionType string `json:"connectionType"`
}

// Healthy is true when the daemon, management and signal are all connected.
func (s Status) Healthy() bool {
	return s.DaemonStatus == "Connected" && s.Management.Connected && s.Signal.Connected
}

// IP is the NetBird address without its mask.
func (s Status) IP() string {
	ip, _, _ := strings.Cut(s.NetbirdIP, "/")
	return ip
}

func (c *Client) bin() string {
	if c.Binary == "" {
		return "netbird"
	}
	return c.Binary
}

func (c *Client) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// run executes netbird with args; secret, when non-empty, is scrubbed from
// any output quoted in the error.
func (c *Client) run(ctx context.Context, secret string, args ...string) ([]byte, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin(), args...)
	if len(c.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if secret != "" {
			msg = strings.ReplaceAll(msg, secret, "[REDACTED]")
		}
		var ee *exec.Error
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("netbird %s: %w", args[0], ee.Err)
		}
		if len(msg) > 500 {
			msg = msg[:500]
		}
		return stdout.Bytes(), fmt.Errorf("netbird %s: %v: %s", args[0], err, msg)
	}
	return stdout.Bytes(), nil
}

// Up joins the NetBird network with cfg's setup key. The daemon must be
// running; an already connected client is a success.
func (c *Client) Up(ctx context.Context, cfg api.NetBirdConfig) error {
	if cfg.SetupKey == "" {
		return errors.New("netbird up: no setup key configured for this site")
	}
	args := []string{"up", "--setup-key", cfg.SetupKey}
	if cfg.ManagementURL != "" {
		args = append(args, "--management-url", cfg.ManagementURL)
	}
	out, err := c.run(ctx, cfg.SetupKey, args...)
	if err != nil {
		return err
	}
	if strings.Contains(string(out), "Already connected") {
		c.log().Info("netbird already connected", "management", cfg.ManagementURL)
	} else {
		c.log().Info("netbird connected", "management", cfg.ManagementURL)
	}
	return nil
}

// Join joins with a new setup key or management URL while the daemon
// runs: `netbird down` (a connected client ignores `up`), then Up. The
// agent calls it when the control plane hands it a key it has not joined
// with, so no restart is needed.
func (c *Client) Join(ctx context.Context, cfg api.NetBirdConfig) error {
	if _, err := c.run(ctx, "", "down"); err != nil {
		c.log().Debug("netbird down before a new join failed; joining anyway", "err", err)
	}
	return c.Up(ctx, cfg)
}

// Status runs `netbird status --json`.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	out, err := c.run(ctx, "", "status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("netbird status --json: %w", err)
	}
	return st, nil
}

// Ready runs `netbird status --check ready`: nil when the client is logged in.
func (c *Client) Ready(ctx context.Context) error {
	_, err := c.run(ctx, "", "status", "--check", "ready")
	return err
}

// Facts collects the NetBird state as host facts; every failure is a fact.
func (c *Client) Facts(ctx context.Context) api.NetBirdFacts {
	var f api.NetBirdFacts
	if _, err := exec.LookPath(c.bin()); err != nil {
		f.Error = "netbird not installed: " + err.Error()
		return f
	}
	f.Installed = true
	st, err := c.Status(ctx)
	if err != nil {
		f.Error = err.Error()
		return f
	}
	f.State = st.DaemonStatus
	f.IP = st.IP()
	f.FQDN = st.FQDN
	f.ManagementConnected = st.Management.Connected
	f.PeersConnected = st.Peers.Connected
	f.PeersTotal = st.Peers.Total
	var problems []string
	if err := c.Ready(ctx); err != nil {
		problems = append(problems, "not ready: "+err.Error())
	}
	if !st.Healthy() {
		if st.Management.Error != "" {
			problems = append(problems, "management: "+st.Management.Error)
		}
		if !st.Signal.Connected {
			problems = append(problems, "signal: not connected "+st.Signal.Error)
		}
		if len(problems) == 0 {
			problems = append(problems, "daemon status "+st.DaemonStatus)
		}
	}
	f.Error = strings.TrimSpace(strings.Join(problems, "; "))
	return f
}
