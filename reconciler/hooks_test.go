package reconciler_test

import (
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/webhooks"
)

// The loop plugs into the control plane's hooks and feeds from webhooks.
var (
	_ controlplane.Reconciler = (*reconciler.Loop)(nil)
	_ webhooks.Sink           = (*reconciler.Reconciler)(nil)
)
