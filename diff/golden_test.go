package diff_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// expectation is a case's independent, hand-written facts. Every field is
// required, so a blindly regenerated golden file still has to agree with
// what the case's author stated.
type expectation struct {
	Actions        *int     `json:"actions"`        // actions over all sites, refused ones included
	Destructive    *int     `json:"destructive"`    // destructive actions over all sites
	Plans          *int     `json:"plans"`          // len(Result.Plans())
	Refused        []string `json:"refused"`        // refused sites
	AwaitingReport []string `json:"awaitingReport"` // sites planned against an empty inventory
	Conflicts      *int     `json:"conflicts"`      // unmanaged-name conflicts over all sites
	Unmanaged      *int     `json:"unmanaged"`      // unmanaged VMs over all sites
	// NetBird maps each site with a NetBird group change to it ("+a -b").
	NetBird map[string]string `json:"netbird"`
}

// TestGolden plans every testdata/<case>/ (desired.yaml, actual.json,
// optional options.json) and compares with plan.golden.json and
// plan.golden.txt; expect.json holds facts checked independently.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "*", "desired.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 20 {
		t.Fatalf("found %d golden cases, want at least 20", len(dirs))
	}
	for _, f := range dirs {
		dir := filepath.Dir(f)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			desired, actual, opts := loadCase(t, dir)
			got := diff.Plan(desired, actual, opts)

			var js bytes.Buffer
			if err := diff.RenderJSON(&js, got); err != nil {
				t.Fatal(err)
			}
			var txt bytes.Buffer
			if err := diff.RenderText(&txt, got, diff.RenderOptions{}); err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join(dir, "plan.golden.json"), js.Bytes())
			golden(t, filepath.Join(dir, "plan.golden.txt"), txt.Bytes())

			// The golden JSON must also decode back to exactly this Result.
			var back struct {
				Summary string            `json:"summary"`
				Sites   []diff.SiteResult `json:"sites"`
			}
			readJSON(t, filepath.Join(dir, "plan.golden.json"), &back)
			if diff := cmp.Diff(got.Sites, back.Sites); diff != "" {
				t.Errorf("golden JSON decodes to a different result (-got +golden):\n%s", diff)
			}

			checkExpect(t, dir, got)
			checkInvariants(t, got)
		})
	}
}

func loadCase(t *testing.T, dir string) (model.Desired, map[string]model.Inventory, diff.Options) {
	t.Helper()
	var desired model.Desired
	b, err := os.ReadFile(filepath.Join(dir, "desired.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &desired); err != nil {
		t.Fatalf("%s/desired.yaml: %v", dir, err)
	}
	actual := map[string]model.Inventory{}
	readJSON(t, filepath.Join(dir, "actual.json"), &actual)
	resolveHashes(t, desired, actual)
	opts := diff.Options{Tenant: "acme", Commit: "c0ffee"}
	if _, err := os.Stat(filepath.Join(dir, "options.json")); err == nil {
		readJSON(t, filepath.Join(dir, "options.json"), &opts)
	}
	return desired, actual, opts
}

// resolveHashes lets actual.json say "specHash": "desired:<vm>" for "the
// hash of the desired spec of <vm> at this site", so cases need not carry
// hand-computed hashes. Any other value is taken literally.
func resolveHashes(t *testing.T, desired model.Desired, actual map[string]model.Inventory) {
	t.Helper()
	for site, inv := range actual {
		for i, vm := range inv.VMs {
			name, ok := strings.CutPrefix(vm.SpecHash, "desired:")
			if !ok {
				continue
			}
			idx := slices.IndexFunc(desired.VMs, func(d model.VirtualMachine) bool { return d.Site == site && d.Name == name })
			if idx < 0 {
				t.Fatalf("actual.json: site %s vm %s: specHash %q names no desired VM", site, vm.Name, vm.SpecHash)
			}
			inv.VMs[i].SpecHash = desired.VMs[idx].Spec.Hash()
		}
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./diff -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-golden +got):\n%s", path, diff)
	}
}

func checkExpect(t *testing.T, dir string, got diff.Result) {
	t.Helper()
	var e expectation
	readJSON(t, filepath.Join(dir, "expect.json"), &e)
	if e.Actions == nil || e.Destructive == nil || e.Plans == nil || e.Conflicts == nil || e.Unmanaged == nil || e.NetBird == nil {
		t.Fatalf("%s/expect.json: actions, destructive, plans, conflicts, unmanaged and netbird are all required", dir)
	}
	var actions, destructive, conflicts, unmanaged int
	refused, awaiting := []string{}, []string{}
	netbird := map[string]string{}
	for _, s := range got.Sites {
		if s.NetBird != nil {
			netbird[s.Site] = s.NetBird.String()
		}
		actions += len(s.Plan.Actions)
		for _, a := range s.Plan.Actions {
			if a.Destructive {
				destructive++
			}
		}
		conflicts += len(s.Conflicts)
		unmanaged += len(s.Plan.Unmanaged)
		if s.Refused != "" {
			refused = append(refused, s.Site)
		}
		if s.AwaitingReport {
			awaiting = append(awaiting, s.Site)
		}
	}
	gotFacts := map[string]any{
		"actions": actions, "destructive": destructive, "plans": len(got.Plans()),
		"conflicts": conflicts, "unmanaged": unmanaged, "refused": refused, "awaitingReport": awaiting,
		"netbird": netbird,
	}
	wantFacts := map[string]any{
		"actions": *e.Actions, "destructive": *e.Destructive, "plans": *e.Plans,
		"conflicts": *e.Conflicts, "unmanaged": *e.Unmanaged,
		"refused": nonNil(e.Refused), "awaitingReport": nonNil(e.AwaitingReport),
		"netbird": e.NetBird,
	}
	if diff := cmp.Diff(wantFacts, gotFacts); diff != "" {
		t.Errorf("%s/expect.json facts differ (-expect +got):\n%s", dir, diff)
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// checkInvariants holds for every result, whatever the case.
func checkInvariants(t *testing.T, r diff.Result) {
	t.Helper()
	if !slices.IsSortedFunc(r.Sites, func(a, b diff.SiteResult) int { return strings.Compare(a.Site, b.Site) }) {
		t.Errorf("sites not sorted")
	}
	for _, s := range r.Sites {
		if len(s.Plan.Actions) == 0 && s.Plan.ID != "" {
			t.Errorf("site %s: converged plan has ID %q", s.Site, s.Plan.ID)
		}
		if len(s.Plan.Actions) > 0 && len(s.Plan.ID) != 64 {
			t.Errorf("site %s: plan ID %q is not a sha256", s.Site, s.Plan.ID)
		}
		seen := map[string]bool{}
		for i, a := range s.Plan.Actions {
			if seen[a.ID] {
				t.Errorf("site %s: duplicate action ID %s", s.Site, a.ID)
			}
			seen[a.ID] = true
			if i > 0 {
				p := s.Plan.Actions[i-1]
				if p.Operation.Phase() > a.Operation.Phase() || (p.Operation == a.Operation && p.VM >= a.VM) {
					t.Errorf("site %s: action %d (%s %s) out of order after %s %s", s.Site, i, a.Operation, a.VM, p.Operation, p.VM)
				}
			}
			if slices.Contains(s.Plan.Unmanaged, a.VM) {
				t.Errorf("site %s: action %s touches unmanaged VM %s", s.Site, a.Operation, a.VM)
			}
		}
	}
	if s := diff.Summary(r); len(s) > 140 {
		t.Errorf("summary is %d bytes: %q", len(s), s)
	}
}
