package cloudhypervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// APIError is a non-2xx answer of the Cloud Hypervisor API. Chain is the
// error body, one string per link of the VMM's error chain.
type APIError struct {
	Endpoint string
	Status   int
	Chain    []string
}

func (e *APIError) Error() string {
	msg := strings.Join(e.Chain, ": ")
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("cloud-hypervisor %s: HTTP %d: %s", e.Endpoint, e.Status, msg)
}

// IsNotCreated reports whether err is the API's 404 (VmNotCreated/VmMissingConfig).
func IsNotCreated(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// Client speaks the Cloud Hypervisor REST API over one VMM's unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the VMM listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true, // one VMM, rare calls: no idle connections to leak
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// PingResponse is the answer of vmm.ping.
type PingResponse struct {
	BuildVersion string   `json:"build_version"`
	Version      string   `json:"version"`
	PID          int      `json:"pid"`
	Features     []string `json:"features"`
}

// VmInfo is the answer of vm.info.
type VmInfo struct {
	Config           VmConfig `json:"config"`
	State            string   `json:"state"`
	MemoryActualSize int64    `json:"memory_actual_size"`
}

// VmResize is the body of vm.resize; nil fields are left unchanged.
type VmResize struct {
	DesiredVCPUs *int   `json:"desired_vcpus,omitempty"`
	DesiredRAM   *int64 `json:"desired_ram,omitempty"`
}

// Ping calls GET vmm.ping.
func (c *Client) Ping(ctx context.Context) (PingResponse, error) {
	var p PingResponse
	err := c.do(ctx, http.MethodGet, "vmm.ping", nil, &p)
	return p, err
}

// Info calls GET vm.info; IsNotCreated(err) means no VM config exists.
func (c *Client) Info(ctx context.Context) (VmInfo, error) {
	var i VmInfo
	err := c.do(ctx, http.MethodGet, "vm.info", nil, &i)
	return i, err
}

// Create calls PUT vm.create. It fails (500) if a config already exists.
func (c *Client) Create(ctx context.Context, cfg VmConfig) error {
	return c.do(ctx, http.MethodPut, "vm.create", cfg, nil)
}

// Resize calls PUT vm.resize.
func (c *Client) Resize(ctx context.Context, r VmResize) error {
	return c.do(ctx, http.MethodPut, "vm.resize", r, nil)
}

// Action calls one of the PUT endpoints that take no body: vm.boot,
// vm.shutdown, vm.power-button, vm.delete, vm.resume, vmm.shutdown, ...
func (c *Client) Action(ctx context.Context, endpoint string) error {
	return c.do(ctx, http.MethodPut, endpoint, nil, nil)
}

func (c *Client) do(ctx context.Context, method, endpoint string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s body: %w", endpoint, err)
		}
		body = bytes.NewReader(b)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost/api/v1/"+endpoint, body)
	if err != nil {
		return fmt.Errorf("cloud-hypervisor %s: %w", endpoint, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cloud-hypervisor %s on %s: %w", endpoint, c.socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("cloud-hypervisor %s: read answer: %w", endpoint, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &APIError{Endpoint: endpoint, Status: resp.StatusCode}
		if json.Unmarshal(b, &ae.Chain) != nil && len(bytes.TrimSpace(b)) > 0 {
			ae.Chain = []string{strings.TrimSpace(string(b))}
		}
		return ae
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("cloud-hypervisor %s: decode answer: %w", endpoint, err)
		}
	}
	return nil
}
