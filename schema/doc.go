// Package schema owns the manifest format of a tenant repository: the
// embedded JSON Schemas for Site and VirtualMachine (nkudo.io/v1alpha1), the
// YAML loader that keeps the file and line of every document and field, and
// the checks that run after the schema (cross-field rules within a document,
// then the set: unique names, existing sites, per-site limits).
//
// Load reads a whole tree and returns either the validated desired state or
// every error found, each naming file, line and field. Hostile input is
// bounded by the limits in limits.go; each limit is named in its error.
package schema
