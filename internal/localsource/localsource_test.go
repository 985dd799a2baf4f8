package localsource_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nkudo/nkudo/internal/localsource"
)

func TestPolicy(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	repos := filepath.Join(root, "repos")
	for _, d := range []string{filepath.Join(data, "git", "b.git"), filepath.Join(repos, "fleet.git")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A symlink outside the data dir that leads into it.
	if err := os.Symlink(filepath.Join(data, "git"), filepath.Join(repos, "sneaky")); err != nil {
		t.Fatal(err)
	}
	on := localsource.Policy{Allow: true, Protected: []string{data}}
	for _, tc := range []struct {
		url          string
		off, allowed bool // accepted with local sources off; with them on
	}{
		{"https://git.example.com/acme/fleet.git", true, true},
		{"ssh://git@git.example.com/acme/fleet.git", true, true},
		{"git@git.example.com:acme/fleet.git", true, true},
		{repos + "/fleet.git", false, true},
		{"file://" + repos + "/fleet.git", false, true},
		{data + "/git/b.git", false, false},
		{"file://" + data + "/git/b.git", false, false},
		{data, false, false},
		{repos + "/../data/git/b.git", false, false},    // cleaned
		{repos + "/sneaky/b.git", false, false},         // symlink resolved
		{repos + "/sneaky/not-yet/there", false, false}, // resolved as far as it exists
		{data + "x/elsewhere", false, true},             // a sibling sharing a prefix is not inside
	} {
		if err := (localsource.Policy{Protected: []string{data}}).Check(tc.url); (err == nil) != tc.off || (err != nil && !errors.Is(err, localsource.ErrRefused)) {
			t.Errorf("local sources off, %s: err = %v, want accepted %v", tc.url, err, tc.off)
		}
		if err := on.Check(tc.url); (err == nil) != tc.allowed {
			t.Errorf("local sources on, %s: err = %v, want accepted %v", tc.url, err, tc.allowed)
		}
	}
}

// TestCheckGitDirAlternates: a source borrowing objects from the data dir
// through objects/info/alternates is refused.
func TestCheckGitDirAlternates(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	src := filepath.Join(root, "src.git")
	for _, d := range []string{filepath.Join(data, "git", "b.git", "objects"), filepath.Join(src, "objects", "info"), filepath.Join(root, "shared", "objects")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	p := localsource.Policy{Allow: true, Protected: []string{data}}
	alt := filepath.Join(src, "objects", "info", "alternates")
	for _, tc := range []struct {
		alternates string
		ok         bool
	}{
		{"", true},
		{filepath.Join(root, "shared", "objects") + "\n", true},
		{filepath.Join(data, "git", "b.git", "objects") + "\n", false},
		{"# comment\n../../data/git/b.git/objects\n", false}, // relative to src/objects
	} {
		if err := os.WriteFile(alt, []byte(tc.alternates), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := p.CheckGitDir(src); (err == nil) != tc.ok || (err != nil && !errors.Is(err, localsource.ErrRefused)) {
			t.Errorf("alternates %q: err = %v, want accepted %v", tc.alternates, err, tc.ok)
		}
	}
}

// TestRefusalKeepsCause: a git directory refused because it cannot be
// checked keeps the I/O error that stopped the check in its chain, beside
// ErrRefused.
func TestRefusalKeepsCause(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src.git")
	// alternates as a directory: reading it fails.
	if err := os.MkdirAll(filepath.Join(src, "objects", "info", "alternates"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := localsource.Policy{Allow: true}.CheckGitDir(src)
	if !errors.Is(err, localsource.ErrRefused) || !errors.Is(err, syscall.EISDIR) {
		t.Errorf("CheckGitDir = %v; want ErrRefused wrapping the read error (EISDIR)", err)
	}
}
