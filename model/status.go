package model

// StatusState is a commit status state, in the forge-neutral names the
// control plane stores and the forge writers map to each forge's own
// (GitLab: failed, not failure).
type StatusState string

const (
	StatusPending StatusState = "pending"
	StatusSuccess StatusState = "success"
	StatusFailure StatusState = "failure"
	StatusError   StatusState = "error"
)

// Valid reports whether s is one of the four states.
func (s StatusState) Valid() bool {
	switch s {
	case StatusPending, StatusSuccess, StatusFailure, StatusError:
		return true
	}
	return false
}
