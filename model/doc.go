// Package model holds the domain types shared by every part of n-kudo:
// desired state read from manifests (Site, VirtualMachine), the state an
// edge agent observes (Inventory), and the plans that reconcile the two.
// It imports nothing of ours, so schema, diff, store, api and agent can all
// depend on it without cycles.
package model
