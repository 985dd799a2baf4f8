package api

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHostFactsLegacyLabelsRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		typed  HostFacts
		labels map[string]string // of the legacy form
	}{
		{"nothing typed", HostFacts{Hostname: "h", Labels: map[string]string{"rack": "r1"}}, map[string]string{"rack": "r1"}},
		{"every typed field", HostFacts{Hostname: "h", CPUModel: "Xeon", AgentVersion: "v1.2.3", KVMError: "no kvm",
			Unknown: map[string]string{"bootTime": "no btime", "disk": "EIO"}, OutboxDropped: 12, Labels: map[string]string{"rack": "r1"}},
			map[string]string{"rack": "r1", "cpuModel": "Xeon", "agentVersion": "v1.2.3", "kvmError": "no kvm",
				"unknown.bootTime": "no btime", "unknown.disk": "EIO", "outboxDropped": "12"}},
		{"typed without labels", HostFacts{CPUModel: "Xeon"}, map[string]string{"cpuModel": "Xeon"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			legacy := tt.typed.LegacyLabels()
			if d := cmp.Diff(tt.labels, legacy.Labels); d != "" {
				t.Errorf("legacy labels (-want +got):\n%s", d)
			}
			if legacy.CPUModel != "" || legacy.AgentVersion != "" || legacy.KVMError != "" || legacy.Unknown != nil || legacy.OutboxDropped != 0 {
				t.Errorf("legacy form keeps typed fields: %+v", legacy)
			}
			if d := cmp.Diff(tt.typed, legacy.Typed()); d != "" {
				t.Errorf("typed again (-want +got):\n%s", d)
			}
		})
	}
}

func TestHostFactsTypedKeepsTypedValuesAndOddLabels(t *testing.T) {
	f := HostFacts{CPUModel: "typed", Unknown: map[string]string{"disk": "typed reason"},
		Labels: map[string]string{"cpuModel": "label", "unknown.disk": "label reason", "unknown.bootTime": "no btime",
			"outboxDropped": "many", "unknown.": "empty fact"}}
	want := HostFacts{CPUModel: "typed", Unknown: map[string]string{"disk": "typed reason", "bootTime": "no btime"},
		Labels: map[string]string{"outboxDropped": "many", "unknown.": "empty fact"}}
	if d := cmp.Diff(want, f.Typed()); d != "" {
		t.Errorf("typed (-want +got):\n%s", d)
	}
	if f.Labels["cpuModel"] != "label" {
		t.Error("Typed changed its receiver's labels")
	}
}

func TestHeartbeatResponseHas(t *testing.T) {
	if (HeartbeatResponse{}).Has(FeatureTypedFacts) {
		t.Error("an answer without features has one")
	}
	if !(HeartbeatResponse{Features: []string{"x", FeatureTypedFacts}}).Has(FeatureTypedFacts) {
		t.Error("listed feature not found")
	}
}
