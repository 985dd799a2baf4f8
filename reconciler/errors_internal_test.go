package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/schema"
	"github.com/nkudo/nkudo/source"
	"github.com/nkudo/nkudo/store"
)

// TestErrorMapping: one table from each kind of failure to everything
// derived from it: the commit status, lastError, the log level and the
// metric label.
func TestErrorMapping(t *testing.T) {
	const commit = "0123456789abcdef0123456789abcdef01234567"
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	invalid := schema.Errors{{File: "fleet/a.yaml", Line: 3, Path: "spec.cpus", Message: "must be an integer"}}
	storeErr := fmt.Errorf("store plan for site-0001: %w", store.ErrNotFound)
	fetchErr := errors.New("fetch https://git.example.com/fleet.git: unexpected client error: 500")

	type want struct {
		Reason      Reason
		Context     string
		State       store.StatusState
		Description string
		Retry       bool
		LastError   string
		Recorded    bool // lastError is written
		Level       slog.Level
		Metric      string
	}
	for _, tc := range []struct {
		name string
		err  *Error
		want want
	}{
		{"transient fetch failure", fetchError(fetchErr), want{
			Reason: ReasonFetch, Context: forge.ContextValidate, State: store.StateError,
			Description: "could not fetch the commit: " + fetchErr.Error(), Retry: true,
			LastError: fetchErr.Error(), Recorded: true, Level: slog.LevelWarn, Metric: "error",
		}},
		{"unreadable commit", loadError(commit, "fleet", fmt.Errorf("fleet/a.yaml: %w", fs.ErrNotExist)), want{
			Reason: ReasonRead, Context: forge.ContextValidate, State: store.StateError,
			Description: "could not read the commit: fleet/a.yaml: file does not exist", Retry: true,
			LastError: "fleet/a.yaml: file does not exist", Recorded: true, Level: slog.LevelWarn, Metric: "error",
		}},
		{"invalid commit", loadError(commit, "fleet", invalid), want{
			Reason: ReasonInvalid, Context: forge.ContextValidate, State: store.StateFailure,
			Description: "1 error: fleet/a.yaml:3: spec.cpus: must be an integer", Retry: false,
			LastError: "invalid commit 0123456789ab: fleet/a.yaml:3: spec.cpus: must be an integer", Recorded: true,
			Level: slog.LevelInfo, Metric: "invalid",
		}},
		{"no manifests", loadError(commit, "", schema.ErrNoManifests), want{
			Reason: ReasonNoManifests, Context: forge.ContextValidate, State: store.StateFailure,
			Description: "no manifests under the repository root: nothing changed", Retry: false,
			LastError: "no manifests found", Recorded: true, Level: slog.LevelInfo, Metric: "invalid",
		}},
		{"store failure", asError(t.Context(), storeErr), want{
			Reason: ReasonStore, Retry: true,
			LastError: storeErr.Error(), Recorded: true, Level: slog.LevelError, Metric: "error",
		}},
		{"stale lease or shutdown", asError(cancelled, fetchError(fetchErr)), want{
			Reason: ReasonCancelled, Level: slog.LevelDebug,
		}},
		{"write refused: the lease passed to another replica", asError(t.Context(), fmt.Errorf("store plans: %w", store.ErrLeaseLost)), want{
			Reason: ReasonLeaseLost, Level: slog.LevelInfo,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got want
			got.Reason, got.Retry = tc.err.Reason, tc.err.Retry
			label, state, desc, ok := tc.err.Status()
			if ok != (tc.want.State != "") {
				t.Errorf("Status ok = %v", ok)
			}
			got.Context, got.State, got.Description = label, state, desc
			got.LastError, got.Recorded = tc.err.LastError()
			got.Level, got.Metric = tc.err.LogLevel(), tc.err.metricReason()
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("mapping (-want +got):\n%s", d)
			}
		})
	}
}

// TestErrorKeepsChain: the typed error is found with errors.As through
// wrapping, and its cause's chain stays reachable (sentinels and typed
// causes alike), including through a sanitized fetch error.
func TestErrorKeepsChain(t *testing.T) {
	invalid := schema.Errors{{File: "a.yaml", Message: "bad"}}
	e := loadError("0123456789abcdef0123456789abcdef01234567", "", invalid)
	wrapped := fmt.Errorf("task: %w", e)
	var got *Error
	if !errors.As(wrapped, &got) || got.Reason != ReasonInvalid {
		t.Fatalf("errors.As(%v) = %v, want the *Error of an invalid commit", wrapped, got)
	}
	var serrs schema.Errors
	if !errors.Is(wrapped, ErrInvalidCommit) || !errors.As(wrapped, &serrs) || len(serrs) != 1 {
		t.Errorf("chain lost: Is(ErrInvalidCommit) %v, As(schema.Errors) %v", errors.Is(wrapped, ErrInvalidCommit), serrs)
	}

	const raw = "https://user:s3cret@git.example.com/fleet.git"
	cause := fmt.Errorf("fetch %s: %w", raw, fs.ErrPermission)
	f := fetchError(fmt.Errorf("fetch %s: %w", forge.SanitizeURL(raw), source.Sanitize(cause, raw)))
	if !errors.Is(f, fs.ErrPermission) {
		t.Errorf("sanitized fetch error lost its cause: %v", f)
	}
	for _, s := range []string{f.Error(), f.Description} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("sanitized text shows the password: %q", s)
		}
	}
}
