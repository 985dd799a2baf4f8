package reconciler

import (
	"context"
	"fmt"
	"time"

	"github.com/nkudo/nkudo/source"
)

// Bounds on what one repository can cost the control plane; the git
// ones are the source package's (see docs/gitops.md, "Bounds").
const (
	// MaxTreeObjectBytes bounds one tree object (source.MaxTreeObjectBytes).
	MaxTreeObjectBytes = source.MaxTreeObjectBytes
	// DefaultMaxMirrorBytes is Options.MaxMirrorBytes when zero.
	DefaultMaxMirrorBytes = source.DefaultMaxMirrorBytes
	// DefaultLoadTimeout is Options.LoadTimeout when zero.
	DefaultLoadTimeout = 30 * time.Second
)

// ErrMirrorTooLarge is wrapped by a reconcile's error when the repository's
// mirror is larger on disk than Options.MaxMirrorBytes after a fetch.
var ErrMirrorTooLarge = source.ErrMirrorTooLarge

// loadContext bounds one load of a tree by Options.LoadTimeout.
func (r *Reconciler) loadContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := r.opts.LoadTimeout
	return context.WithTimeoutCause(ctx, d, fmt.Errorf("loading the manifests took longer than %s (LoadTimeout, nkudo serve --load-timeout): %w", d, context.DeadlineExceeded))
}
