package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestInfoString(t *testing.T) {
	tests := []struct {
		name string
		info Info
		want string
	}{
		{
			name: "stamped release",
			info: Info{Version: "v1.2.3", Commit: "0123456789abcdef0123", Date: "2026-11-26T23:00:00Z", GoVersion: "go1.26.8", Platform: "linux/arm64"},
			want: "v1.2.3 (commit 0123456789ab, built 2026-11-26T23:00:00Z, go1.26.8 linux/arm64)",
		},
		{
			name: "dirty development build",
			info: Info{Version: "dev", Commit: "abc", Date: "unknown", Modified: true, GoVersion: "go1.26.8", Platform: "linux/amd64"},
			want: "dev (commit abc-dirty, built unknown, go1.26.8 linux/amd64)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.info.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestGetUnstamped(t *testing.T) {
	// A test binary is not stamped by the build scripts: it must still report
	// something for every field rather than empty strings.
	got := Get()
	if got.Version != "dev" {
		t.Errorf("Version = %q, want dev for an unstamped build", got.Version)
	}
	if got.Commit == "" || got.Date == "" {
		t.Errorf("Commit %q / Date %q must never be empty", got.Commit, got.Date)
	}
	if want := runtime.GOOS + "/" + runtime.GOARCH; got.Platform != want {
		t.Errorf("Platform = %q, want %q", got.Platform, want)
	}
	if !strings.HasPrefix(String(), "dev (commit ") {
		t.Errorf("String() = %q, want prefix %q", String(), "dev (commit ")
	}
}
