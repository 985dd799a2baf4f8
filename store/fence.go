package store

import (
	"context"
	"errors"
)

// ErrLeaseLost: a fenced write (see WithLease) found its lease expired,
// released or held by another holder, and wrote nothing. Another replica
// owns the work now; the caller stops without reporting a failure.
var ErrLeaseLost = errors.New("lease lost")

// Lease names a lease (Coordination.AcquireLease) and the holder that
// took it.
type Lease struct {
	Name   string
	Holder string
}

type leaseKey struct{}

// WithLease fences the writes made with the returned context: the writes
// that document it (RecordSitePlan, RecordSitePlans, SetSiteDesired,
// MarkCommitApplied, SupersedeActivePlan) check, inside their own
// transaction and before anything is written, that l.Holder still holds
// l.Name unexpired (database time), and fail with ErrLeaseLost otherwise.
// On Postgres the check locks the lease row until the write commits, so a
// takeover waits for the write and the write never lands after it: a
// replica that stalled past its lease cannot overwrite what the new
// holder stored. Carried in the context because every write of a lease's
// work goes through it; other writes ignore it.
func WithLease(ctx context.Context, l Lease) context.Context {
	return context.WithValue(ctx, leaseKey{}, l)
}

// LeaseOf returns the lease WithLease put in ctx; ok is false when there
// is none (the write is not fenced).
func LeaseOf(ctx context.Context) (l Lease, ok bool) {
	l, ok = ctx.Value(leaseKey{}).(Lease)
	return l, ok
}
