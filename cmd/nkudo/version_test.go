package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/internal/version"
)

func TestVersion(t *testing.T) {
	code, out, errs := runCmd(t, t.Context(), "version")
	if code != 0 {
		t.Fatalf("version: exit %d: %s", code, errs)
	}
	if want := "nkudo " + version.String() + "\n"; out != want {
		t.Errorf("version printed %q, want %q", out, want)
	}
	if !strings.Contains(out, "(commit ") {
		t.Errorf("version lacks the commit: %q", out)
	}
}

func TestVersionJSON(t *testing.T) {
	code, out, errs := runCmd(t, t.Context(), "version", "-o", "json")
	var got version.Info
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got != version.Get() {
		t.Errorf("version -o json: exit %d, %v: %q %s", code, err, out, errs)
	}
}
