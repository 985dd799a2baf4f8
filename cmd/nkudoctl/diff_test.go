package main

import (
	"strings"
	"testing"
)

// TestDiffActualFromStreamsIn checks that --actual - reads the command's
// injected input, not the process's standard input.
func TestDiffActualFromStreamsIn(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantCode int
		wantErr  string
	}{
		{"empty inventory plans creates", `{"sites":[]}`, exitChanges, ""},
		{"bad inventory names stdin", `{"sites":`, exitError, "inventory from standard input: decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := nkudoctlIn(t, strings.NewReader(tt.in), "diff", "../../manifests-example", "--actual", "-")
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errOut)
			}
			if tt.wantErr != "" && !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr %q, want it to contain %q", errOut, tt.wantErr)
			}
			if tt.wantCode == exitChanges && !strings.Contains(out, "create") {
				t.Errorf("stdout has no create action:\n%s", out)
			}
		})
	}
}
