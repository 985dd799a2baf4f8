package diff_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
)

// renderFixture is built by hand, not by Plan, so the rendering is tested on
// its own: every symbol, a refusal, a conflict, awaiting report, unmanaged.
func renderFixture() diff.Result {
	spec := &model.VMSpec{State: model.VMRunning, CPUs: 4, MemoryMiB: 2048}
	return diff.Result{Sites: []diff.SiteResult{
		{
			Site: "store-001",
			Plan: model.Plan{
				ID: "aaaaaaaaaaaabbbbbbbbbbbbcccccccccccc", Tenant: "acme", Site: "store-001", InventoryVersion: 7,
				Actions: []model.Action{
					{ID: "1", Operation: model.OpStop, VM: "app", Reason: model.ReasonReplace, Destructive: true, SpecHash: "old"},
					{ID: "2", Operation: model.OpStop, VM: "old-kiosk", Reason: model.ReasonPrune, SpecHash: "k"},
					{ID: "3", Operation: model.OpDelete, VM: "app", Reason: model.ReasonReplace, Destructive: true, SpecHash: "old"},
					{ID: "4", Operation: model.OpDelete, VM: "old-kiosk", Reason: model.ReasonPrune, Destructive: true, SpecHash: "k"},
					{ID: "5", Operation: model.OpCreate, VM: "app", Reason: model.ReasonReplace, Destructive: true, Spec: spec,
						Changes: []model.FieldChange{{Field: "specHash", From: "0123456789abcdef", To: "fedcba9876543210"}, {Field: "maxCpus", From: "2", To: "4"}}},
					{ID: "6", Operation: model.OpCreate, VM: "web", Reason: model.ReasonMissing, Spec: spec},
					{ID: "7", Operation: model.OpResize, VM: "db", Reason: model.ReasonResize, Spec: spec,
						Changes: []model.FieldChange{{Field: "cpus", From: "2", To: "4"}}},
					{ID: "8", Operation: model.OpStart, VM: "app", Reason: model.ReasonReplace, Destructive: true},
					{ID: "9", Operation: model.OpStart, VM: "web", Reason: model.ReasonMissing},
				},
				Unmanaged: []string{"nas", "router"},
			},
			Conflicts: []diff.Conflict{{VM: "nas", Reason: "an unmanaged VM with this name exists at the edge"}},
		},
		{
			Site:    "store-002",
			Refused: "would delete 2 of 2 managed VMs",
			Plan: model.Plan{ID: "dddddddddddddddd", Site: "store-002", InventoryVersion: 3, Actions: []model.Action{
				{ID: "a", Operation: model.OpDelete, VM: "pos-1", Reason: model.ReasonPrune, Destructive: true},
				{ID: "b", Operation: model.OpDelete, VM: "pos-2", Reason: model.ReasonPrune, Destructive: true},
			}},
		},
		{
			Site:           "store-003",
			AwaitingReport: true,
			Plan: model.Plan{ID: "eeeeeeeeeeeeeeee", Site: "store-003", Actions: []model.Action{
				{ID: "c", Operation: model.OpCreate, VM: "pos-1", Reason: model.ReasonMissing, Spec: spec},
			}},
		},
		{Site: "store-004", Plan: model.Plan{Site: "store-004", InventoryVersion: 12, Actions: []model.Action{}}},
	}}
}

func TestRenderText(t *testing.T) {
	for _, tc := range []struct {
		name  string
		color bool
	}{{"plain", false}, {"color", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := diff.RenderText(&buf, renderFixture(), diff.RenderOptions{Color: tc.color}); err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", "render", tc.name+".golden.txt"), buf.Bytes())
			if hasANSI := strings.Contains(buf.String(), "\x1b["); hasANSI != tc.color {
				t.Errorf("output contains ANSI escapes = %v, want %v", hasANSI, tc.color)
			}
			// Independent facts: every symbol appears, the refusal is called out.
			if !tc.color {
				for _, want := range []string{"■   stop", "-/+ delete", "-   delete", "-/+ create", "+   create", "~   resize", ">   start",
					"REFUSED: would delete 2 of 2", "unmanaged, left alone: nas, router", "conflict nas", "cpus 2 → 4",
					"specHash 0123456789ab → fedcba987654", "has not reported yet"} {
					if !strings.Contains(buf.String(), want) {
						t.Errorf("output lacks %q", want)
					}
				}
			}
		})
	}
}

func TestRenderTextEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := diff.RenderText(&buf, diff.Result{}, diff.RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("Total: 0 sites: no changes\n", buf.String()); diff != "" {
		t.Error(diff)
	}
}

func TestSummary(t *testing.T) {
	long := diff.Result{}
	for i := range 200 {
		long.Sites = append(long.Sites, diff.SiteResult{Site: strings.Repeat("s", i%5+1), Refused: "x", AwaitingReport: true,
			Conflicts: []diff.Conflict{{VM: "a"}}})
	}
	for _, tc := range []struct {
		name string
		r    diff.Result
		want string
	}{
		{"fixture", renderFixture(), "4 sites: 2 create, 1 replace, 1 resize, 1 start, 1 stop, 1 delete; 1 refused; 1 conflict; 1 awaiting report"},
		{"empty", diff.Result{}, "0 sites: no changes"},
		{"one converged", diff.Result{Sites: []diff.SiteResult{{Site: "a"}}}, "1 site: no changes"},
		{"many", long, "200 sites: no changes; 200 refused; 200 conflicts; 200 awaiting report"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := diff.Summary(tc.r)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Error(diff)
			}
			if len(got) > 140 {
				t.Errorf("summary is %d bytes, want <= 140", len(got))
			}
		})
	}
}

func TestRenderJSONEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := diff.RenderJSON(&buf, diff.Result{}); err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"summary\": \"0 sites: no changes\",\n  \"sites\": []\n}\n"
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Error(diff)
	}
}

// A site whose only change is its NetBird groups has no actions and no
// plan, yet the summary and the preview still name the change.
func TestNetBirdGroupsOnlyChange(t *testing.T) {
	desired := model.Desired{Sites: []model.Site{{Name: "s1", Spec: model.SiteSpec{NetBird: &model.NetBirdSpec{Groups: []string{"pos", "ot-gateways"}}}}}}
	actual := map[string]model.Inventory{"s1": {Site: "s1", Version: 2, Reported: true}}
	r := diff.Plan(desired, actual, diff.Options{Tenant: "acme", NetBirdGroups: map[string][]string{"s1": {"pos"}}})
	if got := len(r.Plans()); got != 0 {
		t.Errorf("plans = %d, want 0: NetBird groups make no agent action", got)
	}
	if !r.Sites[0].Changed() {
		t.Error("Changed() = false for a site whose groups change")
	}
	if got, want := diff.Summary(r), "1 site: netbird groups +ot-gateways"; got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
	var b strings.Builder
	if err := diff.RenderText(&b, r, diff.RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "  ~   netbird groups +ot-gateways\n") {
		t.Errorf("preview lacks the netbird line:\n%s", b.String())
	}

	// The same groups in another order are no change; nor is a site whose
	// current groups are unknown.
	for name, have := range map[string]map[string][]string{"same": {"s1": {"ot-gateways", "pos"}}, "unknown": nil} {
		r := diff.Plan(desired, actual, diff.Options{Tenant: "acme", NetBirdGroups: have})
		if r.Sites[0].NetBird != nil || r.Sites[0].Changed() {
			t.Errorf("%s: NetBird = %v, want no change", name, r.Sites[0].NetBird)
		}
		if got := diff.Summary(r); got != "1 site: no changes" {
			t.Errorf("%s: Summary = %q", name, got)
		}
	}
}
