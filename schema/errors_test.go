package schema

import (
	"encoding/json"
	"io/fs"
	"testing"
)

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{File: "vms/a.yaml", Line: 12, Path: "spec.cpus", Message: "must be >= 1"}, "vms/a.yaml:12: spec.cpus: must be >= 1"},
		{Error{File: "vms/a.yaml", Line: 3, Message: "missing kind"}, "vms/a.yaml:3: missing kind"},
		{Error{File: "big.yaml", Message: "too big"}, "big.yaml: too big"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	es := Errors{{File: "b.yaml", Line: 1, Message: "x"}, {File: "a.yaml", Line: 9, Message: "y"}, {File: "a.yaml", Line: 2, Message: "z"}, {File: "a.yaml", Line: 2, Message: "z"}}
	if got, want := es.sorted().Error(), "a.yaml:2: z\na.yaml:9: y\nb.yaml:1: x"; got != want {
		t.Errorf("sorted Errors = %q, want %q", got, want)
	}
}

func TestJSONSchemas(t *testing.T) {
	for _, name := range []string{"site.json", "virtualmachine.json", "common.json"} {
		b, err := fs.ReadFile(JSONSchemas(), name)
		if err != nil {
			t.Errorf("JSONSchemas: %v", err)
			continue
		}
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema = %v, want draft 2020-12", name, doc["$schema"])
		}
	}
}
