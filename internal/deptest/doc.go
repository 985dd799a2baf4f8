// Package deptest pins the module's import graph to the package table in
// docs/architecture.md and to the rules stated under it. It has no code of
// its own: its test reads the table, lists the packages with `go list`, and
// fails on any difference, so the page and the code cannot drift apart.
package deptest
