// Package version owns the build identity of the n-kudo binaries: the release
// version, the source commit and the build date. scripts/build-*.sh stamp them
// at link time with
//
//	-ldflags "-X github.com/nkudo/nkudo/internal/version.Version=v1.2.3
//	          -X github.com/nkudo/nkudo/internal/version.Commit=<sha>
//	          -X github.com/nkudo/nkudo/internal/version.Date=<RFC 3339>"
//
// An unstamped build (go run, go build, go test) reports Version "dev" and
// takes the commit and date from the VCS information the go command embeds,
// when there is any.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by the linker (-X); these are the only package variables and nothing
// writes them at run time.
var (
	// Version is the release version, for example "v0.3.1". Empty or "dev"
	// means a development build.
	Version = "dev"
	// Commit is the full git commit the binary was built from. Empty means
	// unknown; Info then falls back to the embedded VCS information.
	Commit = ""
	// Date is the build (commit) date in RFC 3339, UTC. Empty means unknown.
	Date = ""
)

// Info is the build identity of the running binary.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
	Modified  bool   `json:"modified,omitempty"` // working tree was dirty (unstamped builds only)
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"` // GOOS/GOARCH
}

// Get returns the build identity: the linker-stamped values, completed from
// the go command's embedded VCS settings where a value was not stamped.
func Get() Info {
	info := Info{
		Version:   Version,
		Commit:    Commit,
		Date:      Date,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Commit == "" {
					info.Commit = s.Value
				}
			case "vcs.time":
				if info.Date == "" {
					info.Date = s.Value
				}
			case "vcs.modified":
				info.Modified = Commit == "" && s.Value == "true"
			}
		}
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	if info.Date == "" {
		info.Date = "unknown"
	}
	return info
}

// String formats the identity on one line, for `version` commands and the
// first log line of a daemon: "v0.3.1 (commit 1a2b3c4d5e6f, built 2026-11-26T23:00:00Z, go1.26.8 linux/amd64)".
func (i Info) String() string {
	commit := i.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if i.Modified {
		commit += "-dirty"
	}
	return fmt.Sprintf("%s (commit %s, built %s, %s %s)", i.Version, commit, i.Date, i.GoVersion, i.Platform)
}

// String is Get().String(): the one-line build identity of this binary.
func String() string { return Get().String() }
