package demo

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Step names a kind of event in the story.
type Step string

// The steps, in the order the story usually reaches them.
const (
	StepStart     Step = "start"     // the demo's data dir and hypervisor
	StepValidate  Step = "validate"  // local validation of the manifests
	StepServer    Step = "server"    // the control plane is up
	StepTenant    Step = "tenant"    // tenant and token created
	StepRepo      Step = "repo"      // git repository created or registered
	StepEnroll    Step = "enroll"    // a site's agent enrolled and running
	StepCommit    Step = "commit"    // a commit was made (and announced)
	StepStatus    Step = "status"    // a commit status changed
	StepPlan      Step = "plan"      // the plans of a commit, rendered
	StepAction    Step = "action"    // an action changed state at a site
	StepConverged Step = "converged" // every site converged on a commit
	StepExplore   Step = "explore"   // how to explore further
	StepReady     Step = "ready"     // waiting for Ctrl-C
	StepStop      Step = "stop"      // shutting down
	StepDone      Step = "done"      // the --once run finished
)

// Event is one thing that happened in the story; --json prints one per line.
type Event struct {
	Time    time.Time `json:"time"`
	Step    Step      `json:"step"`
	Site    string    `json:"site,omitempty"`
	Commit  string    `json:"commit,omitempty"`
	Message string    `json:"message"`
	// Detail is multi-line text shown under the message (a plan, a command list).
	Detail string `json:"detail,omitempty"`
	// Data carries machine-readable fields of the step.
	Data map[string]any `json:"data,omitempty"`
}

// narrator prints events for a person or as JSON lines.
type narrator struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
	now  func() time.Time
	// Events, when set, receives every event too (tests).
	events func(Event)
}

func (n *narrator) emit(e Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e.Time.IsZero() {
		e.Time = n.now().UTC()
	}
	if n.events != nil {
		n.events(e)
	}
	if n.json {
		b, err := json.Marshal(e)
		if err != nil {
			b, _ = json.Marshal(Event{Time: e.Time, Step: e.Step, Message: e.Message + " (data not encodable: " + err.Error() + ")"})
		}
		n.w.Write(append(b, '\n'))
		return
	}
	var b strings.Builder
	switch e.Step {
	case StepValidate, StepServer, StepTenant, StepRepo, StepCommit, StepConverged, StepExplore, StepReady, StepDone:
		b.WriteString("\n==> ")
	case StepEnroll, StepStatus, StepAction, StepPlan:
		b.WriteString("    ")
	default:
		b.WriteString("--> ")
	}
	if e.Site != "" && e.Step == StepAction {
		fmt.Fprintf(&b, "%-16s ", e.Site)
	}
	b.WriteString(e.Message)
	b.WriteByte('\n')
	if e.Detail != "" {
		for _, line := range strings.Split(strings.TrimRight(e.Detail, "\n"), "\n") {
			b.WriteString("      ")
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	io.WriteString(n.w, b.String())
}

func (n *narrator) say(step Step, msg string, args ...any) {
	n.emit(Event{Step: step, Message: fmt.Sprintf(msg, args...)})
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
