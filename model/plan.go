package model

// Operation is one kind of plan action. Phase order inside a plan is fixed:
// stop, delete, create, resize, start.
type Operation string

const (
	OpStop   Operation = "stop"
	OpDelete Operation = "delete"
	OpCreate Operation = "create"
	OpResize Operation = "resize"
	OpStart  Operation = "start"
)

// Phase is the position of an operation in the fixed plan order.
func (o Operation) Phase() int {
	switch o {
	case OpStop:
		return 0
	case OpDelete:
		return 1
	case OpCreate:
		return 2
	case OpResize:
		return 3
	case OpStart:
		return 4
	}
	return 5
}

// Reason says why the planner chose an action.
type Reason string

const (
	ReasonMissing Reason = "missing" // desired, absent at the edge
	ReasonState   Reason = "state"   // power state differs
	ReasonResize  Reason = "resize"  // cpus/memory changed within headroom
	ReasonReplace Reason = "replace" // any other spec change
	ReasonPrune   Reason = "prune"   // managed at the edge, gone from git
)

// FieldChange is one field that differs between desired and actual.
type FieldChange struct {
	Field string `json:"field"`
	From  string `json:"from,omitempty"`
	To    string `json:"to,omitempty"`
}

// Action is one step of a plan.
type Action struct {
	// ID is a hash of (tenant, site, VM, operation, spec hash): the same
	// inputs always give the same ID, which is what makes execution idempotent.
	ID        string    `json:"id"`
	Operation Operation `json:"operation"`
	VM        string    `json:"vm"`
	Reason    Reason    `json:"reason"`
	// Destructive marks actions that lose VM state (delete, and every step of a replace).
	Destructive bool `json:"destructive,omitempty"`
	// Spec is the full desired spec for create and resize; nil otherwise.
	Spec     *VMSpec       `json:"spec,omitempty"`
	SpecHash string        `json:"specHash,omitempty"`
	Changes  []FieldChange `json:"changes,omitempty"`
}

// Plan is the ordered set of actions that converges one site.
type Plan struct {
	// ID is a hash of the site and its action IDs.
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	Site   string `json:"site"`
	Commit string `json:"commit,omitempty"`
	// InventoryVersion is the Inventory.Version the plan was computed against.
	InventoryVersion int64    `json:"inventoryVersion"`
	Actions          []Action `json:"actions"`
	// Unmanaged lists VMs present at the edge that n-kudo did not create; they are never touched.
	Unmanaged []string `json:"unmanaged,omitempty"`
}

// PlanStatus is the lifecycle of a stored plan.
type PlanStatus string

const (
	PlanPending    PlanStatus = "pending"
	PlanInProgress PlanStatus = "in_progress"
	PlanSucceeded  PlanStatus = "succeeded"
	PlanFailed     PlanStatus = "failed"
	PlanSuperseded PlanStatus = "superseded"
)

// ActionStatus is the lifecycle of a stored action.
type ActionStatus string

const (
	ActionPending   ActionStatus = "pending"
	ActionRunning   ActionStatus = "running"
	ActionSucceeded ActionStatus = "succeeded"
	ActionFailed    ActionStatus = "failed"
	ActionSkipped   ActionStatus = "skipped"
)
