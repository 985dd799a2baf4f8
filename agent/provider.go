// Package agent is the n-kudo edge agent: enrollment, heartbeat with host
// facts and VM inventory, the crash-safe plan executor with its persisted
// idempotency cache, and the on-disk outbox that buffers results and logs
// while the control plane is unreachable. An agent that changed its host
// since its last acknowledged heartbeat (an action applied, or the provider
// listing something else) reports its inventory before it judges a plan, so
// the stale-plan guard compares with a current inventory version; it also
// reports at once when a plan that changed something ends. A plan the
// control plane cancels (superseded without a newer one) stops before its
// next action, the rest reported skipped: the agent checks once,
// synchronously and bounded by Config.CheckTimeout, that a plan is still
// active before its first action, and after that relies on the plan
// long-poll (api.Client.WatchPlan) and on a refused action start, so a slow
// control plane never holds execution back. Hypervisors plug
// in as Providers (see agent/providers/cloudhypervisor); the control plane
// is reached only through api.Client.
package agent

import (
	"context"
	"errors"

	"github.com/nkudo/nkudo/model"
)

// Provider drives one hypervisor on this host. Every method is idempotent:
// creating a VM that exists with the same spec, starting a running VM,
// stopping a stopped one or deleting a missing one succeeds without effect.
// Methods refuse (ErrUnmanaged) to touch a VM that n-kudo did not create.
type Provider interface {
	// Create prepares the VM (images, disks, seed, config) without starting it.
	Create(ctx context.Context, name string, spec model.VMSpec) error
	Start(ctx context.Context, name string) error
	// Stop asks the guest to power off and forces it after a timeout.
	Stop(ctx context.Context, name string) error
	// Delete stops the VM if needed and removes everything it owns.
	Delete(ctx context.Context, name string) error
	// Resize sets vCPUs and memory within the VM's maxima.
	Resize(ctx context.Context, name string, cpus, memoryMiB int) error
	// List reports every VM on the host, managed or not, sorted by name.
	List(ctx context.Context) ([]model.ObservedVM, error)
}

// ErrUnmanaged is returned for an operation on a VM n-kudo did not create.
var ErrUnmanaged = errors.New("vm is not managed by n-kudo")

// ProgressFunc receives human-readable progress lines of one action; the
// executor streams them to the control plane as the action's log.
type ProgressFunc func(line string)

type progressKey struct{}

// WithProgress returns a context that carries a progress sink for providers.
func WithProgress(ctx context.Context, fn ProgressFunc) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

// Progress sends a line to the sink carried by ctx, if any.
func Progress(ctx context.Context, line string) {
	if fn, ok := ctx.Value(progressKey{}).(ProgressFunc); ok && fn != nil {
		fn(line)
	}
}
