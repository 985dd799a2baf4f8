package schema

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestImports pins the package's dependencies: schema reads a file tree and
// nothing else, so no network, database, process or clock packages. A
// caller's context may bound a load; schema never reads a clock itself.
func TestImports(t *testing.T) {
	allowed := []string{
		"bytes", "cmp", "context", "embed", "encoding/json", "errors", "fmt", "io", "io/fs", "math",
		"math/big", "path", "regexp", "slices", "strconv", "strings", "sync", "unicode/utf8",
		// Files load in parallel: runtime for GOMAXPROCS, sync/atomic for
		// the workers' shared counters.
		"runtime", "sync/atomic",
		// Valid documents map onto the model types without a JSON round trip.
		"reflect",
		"github.com/nkudo/nkudo/model",
		"github.com/santhosh-tekuri/jsonschema/v6",
		"github.com/santhosh-tekuri/jsonschema/v6/kind",
		"go.yaml.in/yaml/v3",
		"golang.org/x/text/language",
		"golang.org/x/text/message",
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if !slices.Contains(allowed, p) {
				t.Errorf("%s imports %s, which schema must not depend on (update the allow list only with a reason)", name, p)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no source files checked")
	}
}
