// Package integration holds cross-package suites that run a real control
// plane (controlplane/cptest: real TLS, real SQLite and Postgres stores)
// and drive it only through the api package, as agents and people do.
package integration
