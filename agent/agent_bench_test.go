package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nkudo/nkudo/model"
)

// listOnly is a Provider that only lists a fixed inventory: the benchmark
// measures the comparison the agent adds before each plan, not the hypervisor.
type listOnly struct{ vms []model.ObservedVM }

var errListOnly = errors.New("list-only provider")

func (listOnly) Create(context.Context, string, model.VMSpec) error { return errListOnly }
func (listOnly) Start(context.Context, string) error                { return errListOnly }
func (listOnly) Stop(context.Context, string) error                 { return errListOnly }
func (listOnly) Delete(context.Context, string) error               { return errListOnly }
func (listOnly) Resize(context.Context, string, int, int) error     { return errListOnly }
func (p listOnly) List(context.Context) ([]model.ObservedVM, error) { return p.vms, nil }

// BenchmarkUnreportedUnchanged is the agent's cost, per plan, of deciding
// that no heartbeat is needed before judging it (provider listing aside).
func BenchmarkUnreportedUnchanged(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("vms=%d", n), func(b *testing.B) {
			vms := make([]model.ObservedVM, n)
			for i := range vms {
				vms[i] = model.ObservedVM{Name: fmt.Sprintf("vm-%03d", i), State: model.VMRunning, Managed: true,
					SpecHash: "5f1d0c2a9b8e7d6c5f1d0c2a9b8e7d6c5f1d0c2a9b8e7d6c5f1d0c2a9b8e7d6c", CPUs: 2, MemoryMiB: 1024, MaxCPUs: 4, MaxMemoryMiB: 2048}
			}
			a := New(Config{Executor: &Executor{Provider: listOnly{vms}}})
			a.reported = inventoryKey(vms)
			for b.Loop() {
				if why := a.unreported(b.Context()); why != "" {
					b.Fatal(why)
				}
			}
		})
	}
}
