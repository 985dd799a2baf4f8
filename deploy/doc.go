// Package deploy holds what an operator installs beside the binaries: the
// container image's Dockerfile, systemd units, sample environment files,
// Prometheus alerting rules (prometheus/), a Grafana dashboard (grafana/)
// and the control plane's Helm chart (helm/nkudo). It has no code; its
// tests check those files against the metrics the control plane really
// exports, and render the chart with the pinned helm.
package deploy
