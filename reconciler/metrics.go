package reconciler

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// reconcileErrors counts reconciles that ended in an error, by tenant and
// reason: "invalid" when the commit itself is at fault (the tenant sees
// nkudo/validate), "error" for everything an operator looks at (fetch,
// credentials, planning, the store).
type reconcileErrors struct{ vec *prometheus.CounterVec }

// newReconcileErrors registers the counter on reg (nil: counted but not
// exported). A second reconciler on the same registry shares the counter.
func newReconcileErrors(reg prometheus.Registerer) (reconcileErrors, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nkudo_reconcile_errors_total",
		Help: "Reconciles that failed, by tenant and reason (invalid: the commit; error: fetch, credentials, planning or the store).",
	}, []string{"tenant", "reason"})
	if reg == nil {
		return reconcileErrors{vec}, nil
	}
	if err := reg.Register(vec); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return reconcileErrors{}, fmt.Errorf("register reconcile metrics: %w", err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return reconcileErrors{}, fmt.Errorf("register reconcile metrics: nkudo_reconcile_errors_total is already registered as %T", are.ExistingCollector)
		}
		vec = existing
	}
	return reconcileErrors{vec}, nil
}

// count counts err (nil: nothing) by the reason its *Error gives; a
// reconcile cut short (ctx ended) did not fail and is not counted.
func (m reconcileErrors) count(ctx context.Context, tenant string, err error) {
	if m.vec == nil {
		return
	}
	e := asError(ctx, err)
	if e == nil || e.metricReason() == "" {
		return
	}
	m.vec.WithLabelValues(tenant, e.metricReason()).Inc()
}
