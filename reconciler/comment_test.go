package reconciler

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/schema"
	"github.com/nkudo/nkudo/store"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

const commentSHA = "0123456789abcdef0123456789abcdef01234567"

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", "comment", name+".md")
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s (-want +got):\n%s", p, d)
	}
}

func commentResult() diff.Result {
	return diff.Result{Sites: []diff.SiteResult{
		{Site: "store-042", Plan: model.Plan{Site: "store-042", InventoryVersion: 7, Actions: []model.Action{
			{Operation: model.OpResize, VM: "nvr", Reason: model.ReasonResize, Changes: []model.FieldChange{{Field: "cpus", From: "2", To: "4"}}},
			{Operation: model.OpCreate, VM: "pos-3", Reason: model.ReasonMissing},
			{Operation: model.OpStart, VM: "pos-3", Reason: model.ReasonMissing},
		}}},
		{Site: "store-043", Plan: model.Plan{Site: "store-043", InventoryVersion: 3}},
		{Site: "store-044", Refused: "would delete 3 of 4 VMs (limit 1); set spec.prune.allowAll to opt in",
			Plan: model.Plan{Site: "store-044", InventoryVersion: 9, Actions: []model.Action{
				{Operation: model.OpDelete, VM: "cam-1", Reason: model.ReasonPrune, Destructive: true},
			}}},
		{Site: "store-045", AwaitingReport: true, Plan: model.Plan{Site: "store-045", Actions: []model.Action{
			{Operation: model.OpCreate, VM: "edge", Reason: model.ReasonMissing},
		}}},
	}}
}

// TestRenderPlanComment pins the Markdown of a plan with a change, an
// unchanged site, a refused destructive prune and a site not reporting.
func TestRenderPlanComment(t *testing.T) {
	res := commentResult()
	got := renderPlanComment(planComment{PR: 5, Commit: commentSHA, Summary: diff.Summary(res), Result: &res, FullURL: "https://cp.example/v1/repos/r1/previews/5",
		Base: "fedcba9876543210fedcba9876543210fedcba98", Inventories: map[string]int64{"store-042": 7, "store-043": 3, "store-044": 9, "store-045": 0},
		Changes: []string{"inventory of site store-042 moved from v5 to v7"}})
	golden(t, "plan", got)
	for _, want := range []string{"DESTRUCTIVE", "**REFUSED** at `store-044`", "Not reporting yet", "1 site without changes", commentSHA, "```diff\n",
		"Re-computed: inventory of site store-042 moved from v5 to v7", "on base fedcba987654", "`store-042` v7, `store-043` v3"} {
		if !strings.Contains(got, want) {
			t.Errorf("comment lacks %q:\n%s", want, got)
		}
	}
}

// TestRenderPlanCommentInvalid: an invalid head lists its errors as
// file:line: path: message, each linked to the line in the head.
func TestRenderPlanCommentInvalid(t *testing.T) {
	repo := store.Repository{URL: "https://gitea.example/acme/fleet.git", Path: "manifests", ForgeKind: store.ForgeGitea}
	errs := schema.Errors{
		{File: "vms/store-042/nvr.yaml", Line: 4, Path: "spec.cpus", Message: "must be at least 1"},
		{File: "sites/store-042.yaml", Message: "unknown field"},
	}
	got := renderPlanComment(planComment{PR: 5, Commit: commentSHA, Summary: "invalid: 2 errors", Errors: errs, FileURL: fileURL(repo, commentSHA)})
	golden(t, "invalid", got)
	link := "[vms/store-042/nvr.yaml:4](https://gitea.example/acme/fleet/src/commit/" + commentSHA + "/manifests/vms/store-042/nvr.yaml#L4): `spec.cpus`: must be at least 1"
	if !strings.Contains(got, link) {
		t.Errorf("comment lacks %s:\n%s", link, got)
	}
}

// TestRenderPlanCommentTruncates: a plan far above the forge's limit is
// cut per site, each site saying how many lines were left out, and the
// whole comment (with its marker) stays under forge.CommentLimit.
func TestRenderPlanCommentTruncates(t *testing.T) {
	var res diff.Result
	for s := range 4 {
		sr := diff.SiteResult{Site: fmt.Sprintf("site-%d", s), Plan: model.Plan{InventoryVersion: 1}}
		for v := range 3000 {
			sr.Plan.Actions = append(sr.Plan.Actions, model.Action{Operation: model.OpCreate, VM: fmt.Sprintf("vm-%04d-%s", v, strings.Repeat("x", 20)), Reason: model.ReasonMissing})
		}
		res.Sites = append(res.Sites, sr)
	}
	got := renderPlanComment(planComment{PR: 1, Commit: commentSHA, Summary: diff.Summary(res), Result: &res, FullURL: "https://cp.example/v1/repos/r1/previews/1"})
	full := forge.PlanMarker("acme/") + "\n" + got
	if n := len([]rune(full)); n > forge.CommentLimit {
		t.Fatalf("comment has %d characters, over %d", n, forge.CommentLimit)
	}
	for s := range 4 {
		if !strings.Contains(got, fmt.Sprintf("<details><summary>`site-%d`", s)) {
			t.Errorf("site-%d is missing or not folded", s)
		}
	}
	if n := strings.Count(got, "more lines left out; the full preview: https://cp.example/v1/repos/r1/previews/1"); n != 4 {
		t.Errorf("%d sites say what was left out, want 4", n)
	}
	if strings.Contains(got, "cut at the forge's size limit") {
		t.Errorf("the per-site budget did not keep the comment under the limit")
	}
}
