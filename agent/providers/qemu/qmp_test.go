package qemu

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
)

// serveQMP answers one QMP client on a real unix socket: the greeting,
// then for each command an event (which the client must skip) and the
// scripted answer.
func serveQMP(t *testing.T, answers map[string]string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}` + "\r\n"))
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var req struct {
				Execute string `json:"execute"`
			}
			if json.Unmarshal(sc.Bytes(), &req) != nil {
				return
			}
			conn.Write([]byte(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RTC_CHANGE", "data": {"offset": 0}}` + "\r\n"))
			a, ok := answers[req.Execute]
			if !ok {
				a = `{"return": {}}`
			}
			conn.Write([]byte(a + "\r\n"))
		}
	}()
	return sock
}

func TestQMPSkipsEventsAndSurfacesErrors(t *testing.T) {
	sock := serveQMP(t, map[string]string{
		"query-status": `{"return": {"status": "running", "singlestep": false, "running": true}}`,
		"device_add":   `{"error": {"class": "GenericError", "desc": "Bus 'pcie.0' does not support hotplugging"}}`,
	})
	m, err := Dial(t.Context(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var st statusInfo
	if err := m.Run(t.Context(), "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != "running" || !st.Running {
		t.Errorf("query-status = %+v", st)
	}
	err = m.Run(t.Context(), "device_add", map[string]any{"driver": "pc-dimm"}, nil)
	if !IsQMPError(err) || err.Error() != "qmp device_add: GenericError: Bus 'pcie.0' does not support hotplugging" {
		t.Errorf("device_add error = %v", err)
	}
}

func TestQMPRefusesANonQMPPeer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "x.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("{\"hello\": 1}\n"))
			c.Close()
		}
	}()
	if _, err := Dial(t.Context(), sock); err == nil {
		t.Fatal("Dial accepted a peer without a QMP greeting")
	}
}
