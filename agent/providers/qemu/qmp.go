package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// Monitor is one QMP session over a VM's unix socket. QEMU serves one
// client at a time, so sessions are short: dial, a few commands, close.
type Monitor struct {
	conn net.Conn
	r    *bufio.Reader
}

// QMPError is an error QEMU answered a command with.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// defaultQMPTimeout bounds a session whose context has no deadline.
const defaultQMPTimeout = 5 * time.Second

// Dial connects to the QMP socket, reads the greeting and leaves
// capabilities negotiation mode.
func Dial(ctx context.Context, socket string) (*Monitor, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("qmp dial %s: %w", socket, err)
	}
	m := &Monitor{conn: conn, r: bufio.NewReader(conn)}
	m.deadline(ctx)
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	line, err := m.r.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &greeting)
	}
	if err == nil && greeting.QMP == nil {
		err = fmt.Errorf("not a QMP greeting: %.80s", line)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting on %s: %w", socket, err)
	}
	if err := m.Run(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return m, nil
}

func (m *Monitor) deadline(ctx context.Context) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(defaultQMPTimeout)
	}
	_ = m.conn.SetDeadline(dl)
}

// Close ends the session.
func (m *Monitor) Close() error { return m.conn.Close() }

// Run executes cmd with args (nil for none) and decodes its return value
// into out (nil to ignore it). Asynchronous events read in between are
// skipped: nothing here waits for one.
func (m *Monitor) Run(ctx context.Context, cmd string, args, out any) error {
	m.deadline(ctx)
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: encode: %w", cmd, err)
	}
	if _, err := m.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		line, err := m.r.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var resp struct {
			Event  string          `json:"event"`
			Return json.RawMessage `json:"return"`
			Error  *QMPError       `json:"error"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return fmt.Errorf("qmp %s: decode %.80q: %w", cmd, line, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			resp.Error.Command = cmd
			return resp.Error
		case resp.Return == nil:
			return fmt.Errorf("qmp %s: answer without return: %.80q", cmd, line)
		}
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(resp.Return, out); err != nil {
			return fmt.Errorf("qmp %s: decode return: %w", cmd, err)
		}
		return nil
	}
}

// IsQMPError reports whether err is an error answer from QEMU (as opposed
// to a broken connection).
func IsQMPError(err error) bool {
	var qe *QMPError
	return errors.As(err, &qe)
}

// The answers of the queries the provider uses.
type (
	statusInfo struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	cpuInfo struct {
		CPUIndex int    `json:"cpu-index"`
		QOMPath  string `json:"qom-path"`
	}
	hotpluggableCPU struct {
		Type       string         `json:"type"`
		VCPUsCount int            `json:"vcpus-count"`
		Props      map[string]int `json:"props"`
		QOMPath    string         `json:"qom-path,omitempty"`
	}
	memorySummary struct {
		BaseMemory    int64 `json:"base-memory"`
		PluggedMemory int64 `json:"plugged-memory"`
	}
	memoryDevice struct {
		Type string `json:"type"`
		Data struct {
			ID   string `json:"id"`
			Size int64  `json:"size"`
		} `json:"data"`
	}
)
