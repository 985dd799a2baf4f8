package main

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/internal/version"
)

func TestVersion(t *testing.T) {
	t.Setenv("NKUDO_CONFIG", t.TempDir()+"/none.json")
	want := fmt.Sprintf("nkudoctl %s\napi protocol %d\n", version.String(), api.ProtocolVersion)
	for _, args := range [][]string{
		{"version"},
		// A server is not contacted: a closed port does not matter.
		{"version", "--server", "https://127.0.0.1:1"},
	} {
		code, out, errs := nkudoctl(t, args...)
		if code != 0 || errs != "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
		if diff := cmp.Diff(want, out); diff != "" {
			t.Errorf("%v output (-want +got):\n%s", args, diff)
		}
	}

	code, out, errs := nkudoctl(t, "version", "-o", "json")
	if code != 0 {
		t.Fatalf("version -o json: exit %d: %s", code, errs)
	}
	var got versionOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("version -o json: %v\n%s", err, out)
	}
	if diff := cmp.Diff(versionOutput{Info: version.Get(), ProtocolVersion: api.ProtocolVersion}, got); diff != "" {
		t.Errorf("version -o json (-want +got):\n%s", diff)
	}
}
