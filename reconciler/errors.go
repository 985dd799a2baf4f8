package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/schema"
	"github.com/nkudo/nkudo/store"
)

// Reason says why a reconcile or a preview failed. It decides everything
// else about the failure (see Error), so a failure reads the same wherever
// it happens.
type Reason string

const (
	// ReasonFetch: the source could not be fetched (unreachable, refused
	// by the egress policy, a credential refused, a mirror over its bound).
	// The commit is not at fault: error, tried again.
	ReasonFetch Reason = "fetch"
	// ReasonRead: the fetched commit could not be read (a missing object,
	// the load over its time budget). Error, tried again.
	ReasonRead Reason = "read"
	// ReasonInvalid: the commit fails validation. Failure, and trying the
	// same commit again gives the same answer.
	ReasonInvalid Reason = "invalid"
	// ReasonNoManifests: the commit has no manifests under the repository's
	// path (never "desired = empty"). Failure, not tried again.
	ReasonNoManifests Reason = "no-manifests"
	// ReasonStore: planning or the store failed after the commit was
	// validated. No commit status (nkudo/validate already said success);
	// the operator sees it in the log, lastError and the metric.
	ReasonStore Reason = "store"
	// ReasonCancelled: the work was cut short (shutdown, the lease lost to
	// another replica). Nothing failed: no status, no lastError, not
	// counted; the replica that goes on reports.
	ReasonCancelled Reason = "cancelled"
	// ReasonLeaseLost: the store refused a write because the repository's
	// lease had passed to another replica while this one worked (it
	// stalled past the lease). Nothing was written and nothing failed: no
	// status, no lastError, not counted; logged at info, as a handover.
	ReasonLeaseLost Reason = "lease-lost"
)

// reasonRules is the one table from a reason to what it shows.
var reasonRules = map[Reason]struct {
	state store.StatusState // nkudo/validate state ("" = none)
	retry bool
	level slog.Level
	// metric is the nkudo_reconcile_errors_total reason label ("" = not counted).
	metric string
}{
	ReasonFetch:       {store.StateError, true, slog.LevelWarn, "error"},
	ReasonRead:        {store.StateError, true, slog.LevelWarn, "error"},
	ReasonInvalid:     {store.StateFailure, false, slog.LevelInfo, "invalid"},
	ReasonNoManifests: {store.StateFailure, false, slog.LevelInfo, "invalid"},
	ReasonStore:       {"", true, slog.LevelError, "error"},
	ReasonCancelled:   {"", false, slog.LevelDebug, ""},
	ReasonLeaseLost:   {"", false, slog.LevelInfo, ""},
}

// Error is a failed reconcile or preview: why (Reason), what the commit's
// nkudo/validate status says (State and Description), whether the same
// commit may pass when tried again (Retry), and the cause. The commit
// status, the repository's lastError, the log level and the metric are all
// derived from it. Find it with errors.As; Unwrap keeps the cause's chain
// (errors.Is(err, ErrInvalidCommit), ErrMirrorTooLarge, a schema.Errors, …).
type Error struct {
	Reason Reason
	// State is the nkudo/validate state the failure posts on its commit;
	// "" posts none.
	State store.StatusState
	// Retry is true when the same commit may pass at the next trigger or
	// poll (its load is not cached); false when the commit is at fault.
	Retry bool
	// Description is the status description (what the forge shows).
	Description string
	// Err is the cause; never nil.
	Err error
}

func (e *Error) Error() string { return e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// newError builds the failure of reason, its state and retry from the
// reason's rule.
func newError(reason Reason, desc string, err error) *Error {
	rule := reasonRules[reason]
	return &Error{Reason: reason, State: rule.state, Retry: rule.retry, Description: desc, Err: err}
}

// Status is the commit status the failure posts on its commit; ok is false
// when it posts none.
func (e *Error) Status() (context string, state store.StatusState, description string, ok bool) {
	if e.State == "" {
		return "", "", "", false
	}
	return forge.ContextValidate, e.State, e.Description, true
}

// LastError is the repository's lastError for the failure; ok is false
// when it leaves lastError alone (work cut short).
func (e *Error) LastError() (string, bool) {
	if e.Reason == ReasonCancelled || e.Reason == ReasonLeaseLost {
		return "", false
	}
	return e.Error(), true
}

// LogLevel is the level the failure is logged at: the repository's content
// at fault is info (the tenant sees it on the commit), a source or a read
// that may pass next time is a warning, the control plane's own failure an
// error, work cut short is debug, and a write refused because the lease
// passed to another replica is info.
func (e *Error) LogLevel() slog.Level { return reasonRules[e.Reason].level }

// metricReason is the failure's nkudo_reconcile_errors_total label ("" =
// not counted).
func (e *Error) metricReason() string { return reasonRules[e.Reason].metric }

// fetchError is a failure to fetch the source.
func fetchError(err error) *Error {
	return newError(ReasonFetch, "could not fetch the commit: "+err.Error(), err)
}

// loadError classifies a failure to load commit's manifests below path.
func loadError(commit, path string, err error) *Error {
	var serrs schema.Errors
	switch {
	case errors.As(err, &serrs):
		return newError(ReasonInvalid, invalidDescription(serrs), fmt.Errorf("%w %s: %w", ErrInvalidCommit, short(commit), err))
	case errors.Is(err, schema.ErrNoManifests):
		return newError(ReasonNoManifests, "no manifests under "+pathOrRoot(path)+": nothing changed", err)
	default:
		return newError(ReasonRead, "could not read the commit: "+err.Error(), err)
	}
}

// asError is err as an *Error: itself when it is one (or wraps one),
// cancelled when ctx ended (whatever the error says, the work was cut
// short), else a store failure.
func asError(ctx context.Context, err error) *Error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return newError(ReasonCancelled, "", err)
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, ErrInvalidCommit):
		return newError(ReasonInvalid, "", err)
	case errors.Is(err, schema.ErrNoManifests):
		return newError(ReasonNoManifests, "", err)
	case errors.Is(err, store.ErrLeaseLost):
		return newError(ReasonLeaseLost, "", err)
	}
	return newError(ReasonStore, "", err)
}
