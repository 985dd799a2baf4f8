// Package model holds the domain types shared by every part of n-kudo:
// desired state read from manifests (Site, VirtualMachine), the state an
// edge agent observes (Inventory), the plans that reconcile the two, and
// what is recorded of them (StoredPlan, ActionResult, LogLine, Preview, commit
// StatusState), which the store, the API and the agent use as they are
// instead of copying them into look-alike types.
// It imports nothing of ours, so schema, diff, store, api and agent can all
// depend on it without cycles.
package model
