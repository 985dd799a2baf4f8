// Package localsource owns the rule on git sources and git-notes targets
// that live on the server's own file system (a plain path or a file://
// URL): refused unless the operator allows local sources, and even then
// never inside the server's protected directories (its data directory:
// mirrors, notes, credentials, PKI, database).
//
// Paths are compared cleaned, absolute and with symlinks resolved, and the
// check is meant to run at every use, not only when a repository is
// registered: a symlink swapped afterwards is caught at the next fetch.
package localsource

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nkudo/nkudo/internal/gitcopy"
)

// ErrRefused is wrapped by every refusal.
var ErrRefused = errors.New("local source refused")

// Policy says which local paths may be a source. The zero value refuses
// every local path.
type Policy struct {
	// Allow permits local sources at all (nkudo serve --allow-local-sources).
	Allow bool
	// Protected are directories no local source may name or sit inside,
	// even with Allow.
	Protected []string
}

// Path returns the local path rawURL names, or "" when it names a
// network remote. It classifies as the git code does.
func Path(rawURL string) string { return gitcopy.LocalPath(rawURL) }

// Check returns nil when rawURL is not local, or is a local path the
// policy permits.
func (p Policy) Check(rawURL string) error {
	lp := Path(rawURL)
	if lp == "" {
		return nil
	}
	return p.CheckPath(lp)
}

// CheckPath returns nil when the local path lp may be used.
func (p Policy) CheckPath(lp string) error {
	if !p.Allow {
		return fmt.Errorf("%w: %q is a path on the server; local sources are disabled (the operator enables them with --allow-local-sources)", ErrRefused, lp)
	}
	real, err := resolve(lp)
	if err != nil {
		return fmt.Errorf("%w: %q: %w", ErrRefused, lp, err)
	}
	for _, d := range p.Protected {
		if d == "" {
			continue
		}
		pd, err := resolve(d)
		if err != nil {
			return fmt.Errorf("%w: protected directory %q: %w", ErrRefused, d, err)
		}
		if within(real, pd) {
			return fmt.Errorf("%w: %q is inside the server's own data", ErrRefused, lp)
		}
	}
	return nil
}

// CheckGitDir checks a git directory about to be read: the directory
// itself and every object store its objects/info/alternates names (git
// reads objects from those too, so an alternate inside the data dir would
// lend the source another repository's objects).
func (p Policy) CheckGitDir(dir string) error {
	if err := p.CheckPath(dir); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, "objects", "info", "alternates"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %q: alternates: %w", ErrRefused, dir, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		alt := strings.TrimSpace(line)
		if alt == "" || strings.HasPrefix(alt, "#") {
			continue
		}
		if !filepath.IsAbs(alt) {
			alt = filepath.Join(dir, "objects", alt)
		}
		if err := p.CheckPath(alt); err != nil {
			return fmt.Errorf("%q borrows objects from %q: %w", dir, alt, err)
		}
	}
	return nil
}

// within reports whether p is dir or below it; both are clean and absolute.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, string(filepath.Separator))+string(filepath.Separator))
}

// resolve makes p absolute, clean and free of symlinks. A path that does
// not exist (yet) is resolved as far as it exists and the rest appended,
// so a later mkdir cannot place it anywhere the check did not see.
func resolve(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	rest := ""
	cur := abs
	for {
		real, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(real, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return abs, nil
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}
