package debugbundle_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/agent/debugbundle"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
)

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// BenchmarkWrite bundles a busy site: 1000 cached actions, 1000 buffered
// results and 5000 buffered log lines written by the agent's own cache and
// outboxes, and 10 VMs with a 2 MiB console log and a 1 MiB VMM log each.
func BenchmarkWrite(b *testing.B) {
	state := b.TempDir()
	cache, err := agent.OpenCache(filepath.Join(state, "agent", "actions"))
	if err != nil {
		b.Fatal(err)
	}
	results, err := agent.OpenOutbox(filepath.Join(state, "agent", "outbox", "results"), 10000)
	if err != nil {
		b.Fatal(err)
	}
	logs, err := agent.OpenOutbox(filepath.Join(state, "agent", "outbox", "logs"), 50000)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	for i := range 1000 {
		r := agent.Record{Operation: model.OpStart, VM: "pos-1", ActionResult: model.ActionResult{PlanID: "plan",
			ActionID: fmt.Sprintf("act-%d", i), Status: model.ActionSucceeded, StartedAt: now, FinishedAt: now}}
		if err := cache.Put(r); err != nil {
			b.Fatal(err)
		}
		res := r.ActionResult
		if err := results.Add(agent.OutboxEntry{Key: "final-" + r.ActionID, Result: &res}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 5000 {
		if err := logs.Add(agent.OutboxEntry{Log: &api.LogLine{PlanID: "plan", Seq: int64(i + 1), Time: now, Stream: api.StreamAgent,
			Line: "start pos-1: launched cloud-hypervisor"}}); err != nil {
			b.Fatal(err)
		}
	}
	line := strings.Repeat("[    1.234567] guest console output line ", 2) + "\n"
	for i := range 10 {
		dir := filepath.Join(state, "hypervisor", "vms", fmt.Sprintf("vm-%d", i))
		if err := os.MkdirAll(dir, 0o750); err != nil {
			b.Fatal(err)
		}
		for name, size := range map[string]int{"serial.log": 2 << 20, "vmm.log": 1 << 20} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Repeat(line, size/len(line))), 0o640); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "meta.json"), []byte(`{"name":"vm","phase":"created","spec":{"cpus":1,"memoryMiB":512,"cloudInit":{"userData":"#cloud-config\n"}}}`), 0o640); err != nil {
			b.Fatal(err)
		}
	}
	s := &site{state: state, pki: filepath.Join(state, "pki")}
	s.keys = writePKI(b, s.pki)
	opts := debugbundle.Options{StateDir: state, PKIDir: s.pki, AgentVersion: "bench", NetBird: filepath.Join(state, "no-netbird")}
	var size int64
	b.ResetTimer()
	for b.Loop() {
		var w countingWriter
		if _, err := debugbundle.Write(b.Context(), &w, opts); err != nil {
			b.Fatal(err)
		}
		size = w.n
	}
	b.ReportMetric(float64(size), "bundle-bytes")
}
