package model

import (
	"encoding/json"
	"time"
)

// The types below are what the store records and the API serves of plans
// and their execution: one type each, so nothing copies one into another
// on the way from the database to the wire. Their JSON is the API's.

// StoredPlan is a plan with its lifecycle and its actions' progress.
type StoredPlan struct {
	// Plan is the planner's output as stored (Plan.Actions in order).
	Plan         Plan       `json:"plan"`
	RepoID       string     `json:"repoId,omitempty"` // "" for a plan not from a repository
	Status       PlanStatus `json:"status"`
	SupersededBy string     `json:"supersededBy,omitempty"`
	// SupersededByCommit is the commit whose desired state superseded the
	// plan ("" unless superseded, and for plans superseded before it was
	// recorded). With an empty SupersededBy that commit cancelled the plan:
	// it needed nothing of it, or its own plan was refused.
	SupersededByCommit string    `json:"supersededByCommit,omitempty"`
	CreatedAt          time.Time `json:"createdAt"`
	UpdatedAt          time.Time `json:"updatedAt"`
	// Actions holds one record per Plan.Actions entry, same order (nil
	// when the plans were listed without their actions).
	Actions []ActionRecord `json:"actions,omitempty"`
}

// ActionRecord is one action of a stored plan with its progress.
type ActionRecord struct {
	Index  int          `json:"index"` // position in the plan, from 0
	Action Action       `json:"action"`
	Status ActionStatus `json:"status"`
	Error  string       `json:"error,omitempty"`
	// Output is the provider's details the agent reported (nil = none).
	Output     json.RawMessage `json:"output,omitempty"`
	StartedAt  time.Time       `json:"startedAt,omitzero"`  // zero = not started
	FinishedAt time.Time       `json:"finishedAt,omitzero"` // zero = not finished
}

// ActionResult is an agent's report of one action. Status running marks
// the action started; succeeded, failed and skipped are final.
type ActionResult struct {
	PlanID   string       `json:"planId"`
	ActionID string       `json:"actionId"`
	Status   ActionStatus `json:"status"`
	// Error says why a failed action failed.
	Error string `json:"error,omitempty"`
	// Output is a small JSON document of provider details (optional).
	Output     json.RawMessage `json:"output,omitempty"`
	StartedAt  time.Time       `json:"startedAt,omitzero"`
	FinishedAt time.Time       `json:"finishedAt,omitzero"`
}

// LogStream names where a log line came from.
type LogStream string

const (
	StreamStdout LogStream = "stdout"
	StreamStderr LogStream = "stderr"
	StreamAgent  LogStream = "agent" // the agent's own messages about the action
)

// LogLine is one line of execution output.
type LogLine struct {
	PlanID   string    `json:"planId"`
	ActionID string    `json:"actionId,omitempty"`
	Seq      int64     `json:"seq"` // per plan, from 1, assigned by the agent
	Time     time.Time `json:"time"`
	Stream   LogStream `json:"stream"`
	Line     string    `json:"line"`
}

// Preview is the plan a pull request's head would produce (never applied).
type Preview struct {
	// Tenant owns the preview. It is not on the wire: the API answers a
	// tenant only with its own previews.
	Tenant    string          `json:"-"`
	RepoID    string          `json:"repoId"`
	PR        int             `json:"pr"`
	Commit    string          `json:"commit"`
	Summary   string          `json:"summary"`
	PlanText  string          `json:"planText"`
	PlanJSON  json.RawMessage `json:"planJson,omitempty"`
	CreatedAt time.Time       `json:"createdAt"`
	// State is the pull request's: open, closed or merged.
	State PreviewState `json:"state,omitempty"`
	// Base is the commit of the repository's branch in force when the
	// preview was computed ("" = none yet).
	Base string `json:"base,omitempty"`
	// Inventories are the inventory versions (site → version) the plan was
	// computed against; nil when the head was not planned.
	Inventories map[string]int64 `json:"inventories,omitempty"`
}

// PreviewState is the state of a previewed pull request.
type PreviewState string

// Preview states.
const (
	PreviewOpen   PreviewState = "open"
	PreviewClosed PreviewState = "closed"
	PreviewMerged PreviewState = "merged"
)

// Valid reports whether s is a known state.
func (s PreviewState) Valid() bool {
	return s == PreviewOpen || s == PreviewClosed || s == PreviewMerged
}
