// Package demo is the story `nkudo demo` tells a newcomer: a control plane
// on the embedded defaults, a tenant, the example manifests as a git
// repository, one edge agent per example site against a fake (or real)
// Cloud Hypervisor, and two commits reconciled end to end, narrated as they
// happen. It owns the orchestration and the narration only; every part it
// runs is the real one (control plane, reconciler, agent, provider).
package demo
