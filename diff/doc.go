// Package diff is the planner: it compares the desired state of one commit
// (model.Desired) with the inventory each site's agent last reported and
// returns, per site, a minimal ordered plan (model.Plan), plus its text and
// JSON renderings. It owns the plan semantics, action and plan IDs, and
// prune safety.
//
// Rules:
//   - Pure: it imports only model and the standard library; no clock,
//     randomness, logging or I/O. The same inputs give the same Result, IDs
//     included, whatever the order of the input slices and maps.
//   - Only managed VMs (created by n-kudo) are ever changed. Unmanaged VMs are
//     listed in Plan.Unmanaged and never touched.
//   - Unmanaged name conflict: a desired VM whose name is taken by an
//     unmanaged VM at the edge is not created, replaced or adopted; it is
//     reported in SiteResult.Conflicts and the rest of the site is planned.
//   - Actions: missing → create (+ start if Running); same spec hash and
//     state differs → start/stop; same hash and cpus/memory differ → resize
//     (equal hash means equal resize ceilings); other change → replace: stop
//     (if running), delete, create, start (if Running), all destructive;
//     managed but gone from git → stop (if running), delete (prune). Order is
//     fixed: stop, delete, create, resize, start; VMs by name in a phase.
//   - Awaiting report: a site whose agent never reported (no inventory, or
//     Reported=false) is planned against an empty inventory and flagged
//     AwaitingReport; it never prunes.
//   - IDs: an action ID is sha256 over (tenant, site, VM, operation, spec
//     hash, inventory version), plus target cpus/memory for create and
//     resize; a plan ID is sha256 over (tenant, site, action IDs in order).
//     See actionID for why the inventory version is part of it. A converged
//     site has no actions and an empty plan ID.
//   - Prune safety: a site's plan is refused when it would delete (prune) all
//     of its managed VMs, or more than half when it has more than 4, unless
//     its Site has model.AnnotationAllowPrune="true" (Options.PruneLimit sets
//     another share). A site removed from git prunes everything and so is
//     refused too; an empty desired set can never delete a fleet. A refused
//     plan is kept in the SiteResult for display but Result.Plans leaves it
//     out: nothing of a refused site is applied.
//
// See docs/planner.md for the operator-facing account.
package diff
