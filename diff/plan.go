package diff

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nkudo/nkudo/model"
)

// PruneLimit is the largest share of a site's managed VMs, in percent, that
// one plan may delete because they are gone from git. Deleting more is
// refused unless the Site carries model.AnnotationAllowPrune="true".
//
// The zero value selects the default rule: refuse deleting all of a site's
// managed VMs, or more than half of them when the site has more than 4.
// PruneUnlimited (100) never refuses; PruneNone (any negative value) refuses
// every prune.
type PruneLimit int

const (
	// PruneDefault is the default rule (see PruneLimit).
	PruneDefault PruneLimit = 0
	// PruneUnlimited lets a plan delete every managed VM of a site.
	PruneUnlimited PruneLimit = 100
	// PruneNone refuses any plan that prunes a VM without the site's opt-in.
	PruneNone PruneLimit = -1
)

// Options says what to plan and how.
type Options struct {
	// Tenant and Commit are copied into every plan; Tenant is part of every ID.
	Tenant string `json:"tenant,omitempty"`
	Commit string `json:"commit,omitempty"`
	// Sites restricts planning to these sites (incremental reconciles).
	// Nil plans every site found in desired or actual.
	Sites []string `json:"sites,omitempty"`
	// PruneLimit sets the prune-safety share; zero is the default rule.
	PruneLimit PruneLimit `json:"pruneLimit,omitempty"`
	// NetBirdGroups holds, per site, the NetBird groups the site is in now
	// (as last applied, or as last asked for). A site listed here whose Site
	// has a spec.netbird section gets a SiteResult.NetBird change; a site
	// left out is not compared (its current groups are unknown). Nil
	// compares no site.
	NetBirdGroups map[string][]string `json:"netbirdGroups,omitempty"`
}

// SiteResult is the outcome of planning one site.
type SiteResult struct {
	Site string `json:"site"`
	// Plan always carries Tenant, Site, Commit, InventoryVersion and
	// Unmanaged; Actions is empty when the site is converged, and then ID is
	// empty too (no plan is stored for a converged site).
	Plan model.Plan `json:"plan"`
	// Refused is non-empty when prune safety refused the plan; it says why
	// and how to opt in. Plan still holds the refused actions, for display.
	Refused string `json:"refused,omitempty"`
	// AwaitingReport is true when the site's agent has never reported: the
	// plan was computed against an empty inventory.
	AwaitingReport bool `json:"awaitingReport,omitempty"`
	// Conflicts lists desired VMs that were not planned because an unmanaged
	// VM of the same name exists at the edge (sorted by VM name). Nil means none.
	Conflicts []Conflict `json:"conflicts,omitempty"`
	// NetBird is the change to the site's NetBird groups, nil when there is
	// none or it was not compared (see Options.NetBirdGroups). It makes no
	// action: the control plane sets group membership itself, not the agent.
	NetBird *GroupChange `json:"netbird,omitempty"`
}

// Changed reports whether the site differs from its desired state: it has
// actions, NetBird group changes, conflicts or a refused plan.
func (s SiteResult) Changed() bool {
	return len(s.Plan.Actions) > 0 || s.NetBird != nil || s.Refused != "" || len(s.Conflicts) > 0
}

// GroupChange is a change of a site's NetBird groups. Both lists are sorted.
type GroupChange struct {
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
}

// String is "+added -removed", for example "+ot-gateways -legacy".
func (c GroupChange) String() string {
	parts := make([]string, 0, len(c.Added)+len(c.Removed))
	for _, g := range c.Added {
		parts = append(parts, "+"+g)
	}
	for _, g := range c.Removed {
		parts = append(parts, "-"+g)
	}
	return strings.Join(parts, " ")
}

// groupChange compares the groups a site is in with those it wants; nil
// when they are the same set.
func groupChange(have, want []string) *GroupChange {
	var c GroupChange
	for _, g := range want {
		if !slices.Contains(have, g) && !slices.Contains(c.Added, g) {
			c.Added = append(c.Added, g)
		}
	}
	for _, g := range have {
		if !slices.Contains(want, g) && !slices.Contains(c.Removed, g) {
			c.Removed = append(c.Removed, g)
		}
	}
	if len(c.Added) == 0 && len(c.Removed) == 0 {
		return nil
	}
	slices.Sort(c.Added)
	slices.Sort(c.Removed)
	return &c
}

// Conflict is a desired VM that the planner left alone.
type Conflict struct {
	VM     string `json:"vm"`
	Reason string `json:"reason"`
}

// Result is the outcome of one planning run.
type Result struct {
	// Sites is sorted by site name.
	Sites []SiteResult `json:"sites"`
}

// Plans returns the plans to store and hand to agents: those with at least
// one action whose site was not refused, in site order.
func (r Result) Plans() []model.Plan {
	var out []model.Plan
	for _, s := range r.Sites {
		if s.Refused == "" && len(s.Plan.Actions) > 0 {
			out = append(out, s.Plan)
		}
	}
	return out
}

// Plan compares the desired state of one commit with the inventory each site
// last reported and returns one SiteResult per site. It is pure: the same
// inputs always give the same result, byte for byte.
//
// Input is expected to be validated (schema.Load): for duplicate VM names in
// one site, or duplicate names in one inventory, the first one wins.
func Plan(desired model.Desired, actual map[string]model.Inventory, opts Options) Result {
	sites := make(map[string]*siteInput)
	get := func(name string) *siteInput {
		s, ok := sites[name]
		if !ok {
			s = &siteInput{name: name}
			sites[name] = s
		}
		return s
	}
	for i := range desired.Sites {
		s := get(desired.Sites[i].Name)
		if s.site == nil {
			s.site = &desired.Sites[i]
		}
	}
	for i := range desired.VMs {
		vm := &desired.VMs[i]
		s := get(vm.Site)
		s.vms = append(s.vms, vm)
	}
	for name, inv := range actual {
		s := get(name)
		s.inv = inv
		s.hasInv = true
	}

	var only map[string]bool
	if opts.Sites != nil {
		only = make(map[string]bool, len(opts.Sites))
		for _, n := range opts.Sites {
			only[n] = true
		}
	}
	names := make([]string, 0, len(sites))
	for n := range sites {
		if only == nil || only[n] {
			names = append(names, n)
		}
	}
	slices.Sort(names)

	res := Result{Sites: make([]SiteResult, 0, len(names))}
	for _, n := range names {
		res.Sites = append(res.Sites, planSite(sites[n], opts))
	}
	return res
}

type siteInput struct {
	name   string
	site   *model.Site // nil when the site is gone from git
	vms    []*model.VirtualMachine
	inv    model.Inventory
	hasInv bool
}

func planSite(in *siteInput, opts Options) SiteResult {
	sr := SiteResult{
		Site: in.name,
		Plan: model.Plan{
			Tenant:           opts.Tenant,
			Site:             in.name,
			Commit:           opts.Commit,
			InventoryVersion: in.inv.Version,
			Actions:          []model.Action{},
		},
	}
	// An agent that never reported has nothing we can trust: plan against
	// an empty inventory and say so, rather than guess.
	var observed []model.ObservedVM
	if in.hasInv && in.inv.Reported {
		observed = in.inv.VMs
	} else {
		sr.AwaitingReport = true
	}

	obs := make(map[string]*model.ObservedVM, len(observed))
	managed := 0
	for i := range observed {
		o := &observed[i]
		if _, dup := obs[o.Name]; dup {
			continue
		}
		obs[o.Name] = o
		if o.Managed {
			managed++
		} else {
			sr.Plan.Unmanaged = append(sr.Plan.Unmanaged, o.Name)
		}
	}
	slices.Sort(sr.Plan.Unmanaged)

	b := builder{tenant: opts.Tenant, site: in.name, version: in.inv.Version}
	want := make(map[string]bool, len(in.vms))
	for _, vm := range in.vms {
		if want[vm.Name] {
			continue
		}
		want[vm.Name] = true
		o := obs[vm.Name]
		if o != nil && !o.Managed {
			// Never adopt, replace or shadow a VM n-kudo did not create.
			sr.Conflicts = append(sr.Conflicts, Conflict{
				VM: vm.Name,
				Reason: "an unmanaged VM with this name exists at the edge; " +
					"rename the manifest or remove the VM at the edge",
			})
			continue
		}
		b.vm(vm, o)
	}
	slices.SortFunc(sr.Conflicts, func(a, c Conflict) int { return cmp.Compare(a.VM, c.VM) })

	pruned := 0
	for _, o := range obs {
		if o.Managed && !want[o.Name] {
			pruned++
			b.prune(o)
		}
	}

	slices.SortFunc(b.actions, func(a, c model.Action) int {
		if p := cmp.Compare(a.Operation.Phase(), c.Operation.Phase()); p != 0 {
			return p
		}
		return cmp.Compare(a.VM, c.VM)
	})
	sr.Plan.Actions = b.actions
	if len(b.actions) > 0 {
		ids := make([]string, len(b.actions))
		for i, a := range b.actions {
			ids[i] = a.ID
		}
		sr.Plan.ID = planID(opts.Tenant, in.name, ids)
	}
	sr.Refused = pruneRefusal(in, pruned, managed, opts.PruneLimit)
	if in.site != nil && in.site.Spec.NetBird != nil {
		if have, ok := opts.NetBirdGroups[in.name]; ok {
			sr.NetBird = groupChange(have, in.site.Spec.NetBird.Groups)
		}
	}
	return sr
}

// pruneRefusal applies prune safety. Only deletions of VMs gone from git
// count; a replace deletes and re-creates, so it keeps the VM count.
func pruneRefusal(in *siteInput, pruned, managed int, limit PruneLimit) string {
	if pruned == 0 || managed == 0 {
		return ""
	}
	if in.site != nil && in.site.AllowsPrune() {
		return ""
	}
	var refuse bool
	var rule string
	switch {
	case limit == PruneDefault:
		refuse = pruned == managed || (managed > 4 && 2*pruned > managed)
		rule = "default limit: never all of a site's managed VMs, nor more than half when it has more than 4"
	case limit < 0:
		refuse = true
		rule = "prune limit: none without opt-in"
	default:
		refuse = pruned*100 > int(limit)*managed
		rule = "prune limit: " + strconv.Itoa(int(limit)) + "% of a site's managed VMs"
	}
	if !refuse {
		return ""
	}
	how := fmt.Sprintf("annotate Site %s with %s: \"true\" to allow it", in.name, model.AnnotationAllowPrune)
	if in.site == nil {
		how = fmt.Sprintf("Site %s is gone from git: to decommission it, restore the Site with annotation %s: \"true\" until its VMs are deleted", in.name, model.AnnotationAllowPrune)
	}
	return fmt.Sprintf("would delete %d of %d managed VMs (%s); %s", pruned, managed, rule, how)
}

type builder struct {
	tenant, site string
	version      int64
	actions      []model.Action
}

func (b *builder) add(op model.Operation, vm string, reason model.Reason, hash string, spec *model.VMSpec, changes []model.FieldChange) {
	b.actions = append(b.actions, model.Action{
		ID:          b.actionID(op, vm, hash, spec),
		Operation:   op,
		VM:          vm,
		Reason:      reason,
		Destructive: op == model.OpDelete || reason == model.ReasonReplace,
		Spec:        spec,
		SpecHash:    hash,
		Changes:     changes,
	})
}

func (b *builder) vm(vm *model.VirtualMachine, o *model.ObservedVM) {
	spec := vm.Spec
	hash := spec.Hash()
	// Actions carry their own copy: they must not alias the caller's input.
	specCopy := func() *model.VMSpec { c := spec; return &c }
	wantRunning := spec.State == model.VMRunning
	if o == nil {
		b.add(model.OpCreate, vm.Name, model.ReasonMissing, hash, specCopy(), nil)
		if wantRunning {
			b.add(model.OpStart, vm.Name, model.ReasonMissing, hash, nil, nil)
		}
		return
	}
	running := o.State == model.VMRunning
	if o.SpecHash != hash {
		ch := []model.FieldChange{{Field: "specHash", From: o.SpecHash, To: hash}}
		ch = appendIntChange(ch, "maxCpus", max(o.MaxCPUs, o.CPUs), spec.EffectiveMaxCPUs())
		ch = appendIntChange(ch, "maxMemoryMiB", max(o.MaxMemoryMiB, o.MemoryMiB), spec.EffectiveMaxMemoryMiB())
		ch = appendIntChange(ch, "cpus", o.CPUs, spec.CPUs)
		ch = appendIntChange(ch, "memoryMiB", o.MemoryMiB, spec.MemoryMiB)
		if running {
			b.add(model.OpStop, vm.Name, model.ReasonReplace, o.SpecHash, nil, nil)
		}
		b.add(model.OpDelete, vm.Name, model.ReasonReplace, o.SpecHash, nil, nil)
		b.add(model.OpCreate, vm.Name, model.ReasonReplace, hash, specCopy(), ch)
		if wantRunning {
			b.add(model.OpStart, vm.Name, model.ReasonReplace, hash, nil, nil)
		}
		return
	}
	// Same hash means same resize ceilings, so any cpus/memory change fits.
	if o.CPUs != spec.CPUs || o.MemoryMiB != spec.MemoryMiB {
		ch := appendIntChange(nil, "cpus", o.CPUs, spec.CPUs)
		ch = appendIntChange(ch, "memoryMiB", o.MemoryMiB, spec.MemoryMiB)
		b.add(model.OpResize, vm.Name, model.ReasonResize, hash, specCopy(), ch)
	}
	if running != wantRunning {
		op := model.OpStart
		if running {
			op = model.OpStop
		}
		// From is what the agent reported, empty included: it counts as stopped.
		ch := []model.FieldChange{{Field: "state", From: string(o.State), To: string(spec.State)}}
		b.add(op, vm.Name, model.ReasonState, hash, nil, ch)
	}
}

// InSync reports whether an observed VM is in sync with its desired spec:
// n-kudo manages it and the planner would plan nothing for it. It is the
// one definition of "in sync"; the API's and the dashboard's VM views use
// it, so they can never call a VM in sync that a plan would still change.
func InSync(desired *model.VMSpec, observed *model.ObservedVM) bool {
	if desired == nil || observed == nil || !observed.Managed {
		return false
	}
	var b builder
	b.vm(&model.VirtualMachine{Name: observed.Name, Spec: *desired}, observed)
	return len(b.actions) == 0
}

func (b *builder) prune(o *model.ObservedVM) {
	if o.State == model.VMRunning {
		b.add(model.OpStop, o.Name, model.ReasonPrune, o.SpecHash, nil, nil)
	}
	b.add(model.OpDelete, o.Name, model.ReasonPrune, o.SpecHash, nil, nil)
}

func appendIntChange(ch []model.FieldChange, field string, from, to int) []model.FieldChange {
	if from == to {
		return ch
	}
	return append(ch, model.FieldChange{Field: field, From: strconv.Itoa(from), To: strconv.Itoa(to)})
}

// actionID hashes (tenant, site, VM, operation, spec hash, inventory
// version), each field length-prefixed so no two tuples share an encoding.
//
// The inventory version is included on purpose: the agent caches results by
// action ID, so without it a second identical drift repair (a VM stopped by
// hand twice, each time planned back to Running) would get the same ID as
// the first and be answered from the cache instead of executed.
//
// For create and resize the target cpus and memory are added as well: the
// spec hash leaves them out (they can change without a replace), and two
// resizes to different sizes must not share an ID.
func (b *builder) actionID(op model.Operation, vm, hash string, spec *model.VMSpec) string {
	fields := []string{"nkudo.action.v1", b.tenant, b.site, vm, string(op), hash, strconv.FormatInt(b.version, 10)}
	if spec != nil && (op == model.OpCreate || op == model.OpResize) {
		fields = append(fields, strconv.Itoa(spec.CPUs), strconv.Itoa(spec.MemoryMiB))
	}
	return fieldHash(fields...)
}

// planID hashes (tenant, site, action IDs in order). The commit is left out
// so that an identical plan from a later commit is recognised as the same
// plan and not stored twice.
func planID(tenant, site string, actionIDs []string) string {
	return fieldHash(append([]string{"nkudo.plan.v1", tenant, site}, actionIDs...)...)
}

// fieldHash is the hex SHA-256 of fields, each length-prefixed (uvarint) so
// no two lists share an encoding.
func fieldHash(fields ...string) string {
	h := sha256.New()
	var buf []byte
	for _, f := range fields {
		buf = binary.AppendUvarint(buf[:0], uint64(len(f)))
		buf = append(buf, f...)
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))
}
