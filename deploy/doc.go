// Package deploy holds what an operator installs beside the binaries: the
// container image's Dockerfile, systemd units, sample environment files,
// Prometheus alerting rules (prometheus/) and a Grafana dashboard
// (grafana/). It has no code; its tests check those files against the
// metrics the control plane really exports.
package deploy
