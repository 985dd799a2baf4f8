package deptest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/nkudo/nkudo"

// The table's header row; the rows follow it up to the first line that is
// not a table row.
const tableHeader = "| package | owns | imports of ours |"

// The rules stated under the table. Imports are the direct imports of a
// package's non-test files; deps are everything it links.
var (
	// diff and schema never import net/http, database/sql, os/exec or a
	// clock: the planner and the loader are pure functions of their input.
	pure = []string{"diff", "schema"}
	// pureForbiddenDeps may not be linked at all into a pure package.
	pureForbiddenDeps = []string{"net", "net/http", "database/sql", "os/exec"}
	// pureForbiddenImports may not be imported directly: a clock, randomness,
	// the process's files and logging. (time is linked through context,
	// which a caller's deadline needs, but never read.)
	pureForbiddenImports = map[string][]string{
		"diff": {"time", "math/rand", "math/rand/v2", "crypto/rand", "os", "os/exec", "net", "net/http",
			"log", "log/slog", "database/sql", "io/fs", "sync"},
		"schema": {"time", "math/rand", "math/rand/v2", "crypto/rand", "os", "os/exec", "net", "net/http",
			"log", "log/slog", "database/sql"},
	}
	// external lists the only packages outside the module and the standard
	// library that these packages may import: api is the contract the agent
	// and the CLI import, so it brings nothing with it.
	external = map[string][]string{
		"api":  nil,
		"diff": nil,
		"schema": {
			"github.com/santhosh-tekuri/jsonschema/v6",
			"github.com/santhosh-tekuri/jsonschema/v6/kind",
			"go.yaml.in/yaml/v3",
			"golang.org/x/text/language",
			"golang.org/x/text/message",
		},
	}
	// The edge binary never links the control plane, the store, the
	// database drivers or git.
	edge              = "cmd/nkudo-edge"
	edgeForbiddenDeps = []string{module + "/store", module + "/controlplane", module + "/reconciler", "github.com/jackc/pgx", "github.com/go-git/go-git", "modernc.org/sqlite", "database/sql"}
	// edgeModules are the modules the edge binary links, so that a new one
	// on every edge host is a deliberate change of this list: filippo.io/age
	// (and its filippo.io/hpke) decrypt the secrets addressed to the site.
	edgeModules = []string{
		"filippo.io/age", "filippo.io/hpke", "github.com/alecthomas/kong", module,
		"github.com/vishvananda/netlink", "github.com/vishvananda/netns", "golang.org/x/crypto", "golang.org/x/sys",
	}
)

// pkg is the part of `go list -json` this test reads.
type pkg struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Standard   bool
	DepOnly    bool
	Imports    []string
	Deps       []string
	Module     *struct {
		Path string
		Main bool
	}
	Error *struct{ Err string }
}

// row is one row of the table: the packages it names (a row may name
// several that share an owner and imports) and the imports it lists.
type row struct {
	line     int
	text     string
	packages []string
	imports  []string
}

func TestDeps(t *testing.T) {
	root := moduleRoot(t)
	doc := filepath.Join(root, "docs", "architecture.md")
	rows, err := readTable(doc)
	if err != nil {
		t.Fatal(err)
	}
	all := goList(t, root)
	ours := map[string]*pkg{}
	for path, p := range all {
		if p.Module != nil && p.Module.Main && !p.DepOnly {
			ours[short(path)] = p
		}
	}
	if len(ours) < 20 {
		t.Fatalf("go list found only %d packages of the module", len(ours))
	}
	// go test caches a passing result by the files the test opened; go
	// list reads the sources in another process, so open them here too
	// (and each package's directory, for added files) to make an edit to
	// an import run the test again.
	for _, p := range ours {
		if _, err := os.ReadDir(p.Dir); err != nil {
			t.Fatal(err)
		}
		for _, f := range p.GoFiles {
			if _, err := os.Stat(filepath.Join(p.Dir, f)); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("table", func(t *testing.T) {
		byPkg := map[string]row{}
		for _, r := range rows {
			for _, name := range r.packages {
				if prev, dup := byPkg[name]; dup {
					t.Errorf("docs/architecture.md:%d: %s already has a row (line %d)", r.line, name, prev.line)
				}
				byPkg[name] = r
			}
		}
		for _, name := range slices.Sorted(maps.Keys(byPkg)) {
			if ours[name] == nil {
				t.Errorf("docs/architecture.md:%d: the row for %s names a package that does not exist: remove it\n\t%s", byPkg[name].line, name, byPkg[name].text)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(ours)) {
			r, ok := byPkg[name]
			got := ourImports(ours[name])
			if !ok {
				t.Errorf("%s is not in the package table of docs/architecture.md: add a row\n\t| `%s` | <what it owns> | %s |", name, name, cell(got))
				continue
			}
			// A row naming several packages lists the union of their imports;
			// each package must import only what the row lists, and the row
			// must list nothing that none of them imports.
			for _, imp := range got {
				if !slices.Contains(r.imports, imp) {
					t.Errorf("%s imports %s, which its row in docs/architecture.md:%d does not list: add it to the row (or drop the import)\n\t%s", name, imp, r.line, r.text)
				}
			}
		}
		for _, r := range rows {
			var union []string
			for _, name := range r.packages {
				if p := ours[name]; p != nil {
					union = append(union, ourImports(p)...)
				}
			}
			for _, imp := range r.imports {
				if !slices.Contains(union, imp) {
					t.Errorf("docs/architecture.md:%d lists %s as imported by %s, which none of them imports: remove it from the row\n\t%s", r.line, imp, strings.Join(r.packages, ", "), r.text)
				}
			}
		}
	})

	t.Run("pure", func(t *testing.T) {
		for _, name := range pure {
			p := mustPkg(t, ours, name)
			for _, imp := range p.Imports {
				if slices.Contains(pureForbiddenImports[name], imp) {
					t.Errorf("%s imports %s: it does no I/O and has no clock, randomness or logging (rule under the table in docs/architecture.md)", name, imp)
				}
			}
			for _, d := range p.Deps {
				if slices.Contains(pureForbiddenDeps, d) {
					t.Errorf("%s links %s: it never imports net/http, database/sql or os/exec, not even through another package (rule under the table in docs/architecture.md)", name, d)
				}
			}
		}
	})

	t.Run("external", func(t *testing.T) {
		for _, name := range slices.Sorted(maps.Keys(external)) {
			p := mustPkg(t, ours, name)
			for _, imp := range p.Imports {
				if strings.HasPrefix(imp, module+"/") || all[imp] != nil && all[imp].Standard {
					continue
				}
				if !slices.Contains(external[name], imp) {
					t.Errorf("%s imports %s, which is neither the standard library nor listed for it in internal/deptest (rule under the table in docs/architecture.md): add it there only with a reason", name, imp)
				}
			}
		}
	})

	t.Run(edge, func(t *testing.T) {
		p := mustPkg(t, ours, edge)
		linked := map[string]bool{}
		for _, d := range p.Deps {
			for _, f := range edgeForbiddenDeps {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s links %s: the agent binary never links the control plane, the store, pgx or go-git (rule under the table in docs/architecture.md)", edge, d)
				}
			}
			if dp := all[d]; dp != nil && dp.Module != nil {
				linked[dp.Module.Path] = true
			}
		}
		for _, m := range edgeModules {
			if !linked[m] {
				t.Errorf("%s no longer links the module %s: remove it from edgeModules in internal/deptest", edge, m)
			}
		}
		for _, m := range slices.Sorted(maps.Keys(linked)) {
			if !slices.Contains(edgeModules, m) {
				t.Errorf("%s links the new module %s: add it to edgeModules in internal/deptest deliberately", edge, m)
			}
		}
	})
}

func mustPkg(t *testing.T, ours map[string]*pkg, name string) *pkg {
	t.Helper()
	p := ours[name]
	if p == nil {
		t.Fatalf("package %s not found by go list", name)
	}
	return p
}

// ourImports returns p's direct imports of module packages, without the
// module prefix, sorted.
func ourImports(p *pkg) []string {
	var out []string
	for _, imp := range p.Imports {
		if strings.HasPrefix(imp, module+"/") {
			out = append(out, short(imp))
		}
	}
	slices.Sort(out)
	return out
}

func short(path string) string { return strings.TrimPrefix(path, module+"/") }

// cell renders imports as the table writes them.
func cell(imports []string) string {
	if len(imports) == 0 {
		return "none"
	}
	quoted := make([]string, len(imports))
	for i, imp := range imports {
		quoted[i] = "`" + imp + "`"
	}
	return strings.Join(quoted, ", ")
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("not inside the module")
	}
	return filepath.Dir(gomod)
}

// goList lists every package of the module and everything they link,
// keyed by import path.
func goList(t *testing.T, root string) map[string]*pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=ImportPath,Dir,GoFiles,Standard,DepOnly,Imports,Deps,Module,Error", "./...")
	cmd.Dir = root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps -json ./...: %v\n%s", err, stderr.String())
	}
	all := map[string]*pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		if p.Error != nil {
			t.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		all[p.ImportPath] = &p
	}
	return all
}

var (
	backticked = regexp.MustCompile("`([^`]*)`")
	// cellSplit splits a row on the pipes that are not escaped (\|).
	cellSplit = regexp.MustCompile(`(^|[^\\])\|`)
)

// readTable parses the package table of the architecture page. Package
// and import cells name packages in backticks, relative to the module,
// separated by commas; `a/{b,c}` names a/b and a/c; an imports cell of
// "none" lists nothing. Any other text in those cells is an error, so the
// table stays something this test can check.
func readTable(path string) ([]row, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read package table: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	start := slices.Index(lines, tableHeader)
	if start < 0 {
		return nil, fmt.Errorf("%s: no line %q", path, tableHeader)
	}
	var rows []row
	for i := start + 2; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
		text := lines[i]
		cells := splitRow(text)
		if len(cells) != 3 {
			return nil, fmt.Errorf("%s:%d: want 3 cells (package, owns, imports of ours), have %d", path, i+1, len(cells))
		}
		pkgs, err := names(cells[0])
		if err != nil || len(pkgs) == 0 {
			return nil, fmt.Errorf("%s:%d: package cell %q: want backticked package paths (%v)", path, i+1, cells[0], err)
		}
		var imports []string
		if strings.TrimSpace(cells[2]) != "none" {
			if imports, err = names(cells[2]); err != nil || len(imports) == 0 {
				return nil, fmt.Errorf("%s:%d: imports cell %q: want \"none\" or backticked package paths (%v)", path, i+1, cells[2], err)
			}
		}
		rows = append(rows, row{line: i + 1, text: text, packages: pkgs, imports: imports})
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: the package table has no rows", path)
	}
	return rows, nil
}

func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	line = strings.TrimSuffix(line, "|")
	var cells []string
	for {
		loc := cellSplit.FindStringIndex(line)
		if loc == nil {
			return append(cells, strings.TrimSpace(line))
		}
		end := loc[1] - 1 // the pipe
		cells = append(cells, strings.TrimSpace(line[:end]))
		line = line[end+1:]
	}
}

// names returns the package paths a cell names, braces expanded.
func names(c string) ([]string, error) {
	if rest := strings.Trim(backticked.ReplaceAllString(c, ""), ", "); rest != "" {
		return nil, fmt.Errorf("text outside backticks: %q", rest)
	}
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(c, -1) {
		out = append(out, expand(m[1])...)
	}
	return out, nil
}

// expand turns "a/{b,c}" into "a/b", "a/c".
func expand(s string) []string {
	open := strings.IndexByte(s, '{')
	closing := strings.IndexByte(s, '}')
	if open < 0 || closing < open {
		return []string{s}
	}
	var out []string
	for alt := range strings.SplitSeq(s[open+1:closing], ",") {
		out = append(out, expand(s[:open]+alt+s[closing+1:])...)
	}
	return out
}
