package schema

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// checkDecodeValue parses data and checks that decodeValue gives what the
// JSON round trip gives for every document, into both document types:
// the same value, and an error exactly when the round trip fails.
func checkDecodeValue(t *testing.T, data []byte) {
	t.Helper()
	docs, _, _ := parseFile("f.yaml", data)
	for _, d := range docs {
		var viaJSON, fast vmDoc
		var sJSON, sFast siteDoc
		b, merr := json.Marshal(d.value)
		var jerr, sjerr error
		if merr != nil {
			jerr, sjerr = merr, merr
		} else {
			jerr, sjerr = json.Unmarshal(b, &viaJSON), json.Unmarshal(b, &sJSON)
		}
		ferr, sferr := decodeValue(d.value, &fast), decodeValue(d.value, &sFast)
		if (jerr == nil) != (ferr == nil) || (sjerr == nil) != (sferr == nil) {
			t.Fatalf("line %d: errors differ: json %v / %v, decodeValue %v / %v", d.line, jerr, sjerr, ferr, sferr)
		}
		if jerr == nil {
			if diff := cmp.Diff(viaJSON, fast); diff != "" {
				t.Errorf("line %d: VM document differs (-json +decodeValue):\n%s", d.line, diff)
			}
		}
		if sjerr == nil {
			if diff := cmp.Diff(sJSON, sFast); diff != "" {
				t.Errorf("line %d: Site document differs (-json +decodeValue):\n%s", d.line, diff)
			}
		}
	}
}

func TestDecodeValueMatchesJSON(t *testing.T) {
	for _, doc := range []string{
		siteStore,
		vmDocText("pos-1", "store-042"),
		vmDocText("pos-1", "store-042", "  cpus: 2.0", "  memoryMiB: -0.0", "  maxCpus: 1e3", "  maxMemoryMiB: 1e20"),
		vmDocText("pos-1", "store-042", "  cpus: 2.5", "  memoryMiB: 9007199254740993"),
		vmDocText("pos-1", "store-042", "  cpus: \"2\"", "  state: 3"),
		vmDocText("pos-1", "store-042", "  CPUs: 4", "  cpus: 2"),
		vmDocText("pos-1", "store-042", "  disks: []", "  networks: [{bridge: br0, mac: null}, null]", "  cloudInit: null"),
		vmDocText("pos-1", "store-042", "  disks: [{name: a, sizeGiB: 1}]", "  kernel: {url: u, sha256: s, initramfs: {url: i, sha256: t}}"),
		"metadata: {name: x, labels: {}, annotations: {a: b}}\nspec: {netbird: {groups: [a, b]}}\n",
		"metadata: {name: x, labels: {a: null}}\nspec: {netbird: {groups: []}}\n",
		"metadata: {name: x, labels: {a: 1}}\nspec: {netbird: null}\n",
		"metadata: {name: x, Labels: {a: b}}\nspec: {}\n",
		"metadata: [1]\nspec: 3\n",
		"metadata: {name: x}\nspec: {unknown: {deep: [1, 2]}, cpus: 1}\n",
		"metadata: {name: \"\\u212a\"}\nspec: {\"\\u212aernel\": {url: k}}\n",
		"metadata: {name: x, site: y, \"\": z}\nspec: {\"\": 1}\n",
		"metadata: {name: x}\nspec: {cpus: 1.0e+15, memoryMiB: -3}\n",
	} {
		checkDecodeValue(t, []byte(doc))
	}
}

// FuzzDecodeValue: for any document, decodeValue agrees with the JSON
// round trip it replaces.
func FuzzDecodeValue(f *testing.F) {
	f.Add([]byte(siteStore))
	f.Add([]byte(vmDocText("pos-1", "store-042")))
	f.Add([]byte(vmDocText("pos-1", "store-042", "  cpus: 2.0", "  disks: [{name: a, sizeGiB: 1}]", "  networks: [{bridge: b, mac: m}]")))
	f.Add([]byte("metadata: {name: x, labels: {a: b}}\nspec: {netbird: {groups: [a]}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeValue(t, data)
	})
}
