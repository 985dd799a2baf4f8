package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// TestPreview: preview PR prints the stored plan exactly as diff renders
// it (text and -o json), with diff's exit codes; an invalid head is exit 2
// with its errors on stderr; --list shows the open pull requests and
// --all the closed ones too.
func TestPreview(t *testing.T) {
	env, acme, _ := siteEnv(t)
	ctx := t.Context()
	repo, err := acme.Client.CreateRepo(ctx, api.CreateRepoRequest{Name: "fleet", URL: "https://git.example/acme/fleet.git", WebhookSecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	st := env.Store()
	vm := model.VirtualMachine{Name: "pos-1", Site: "store-1", Spec: model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 512}}
	res := diff.Plan(model.Desired{Sites: []model.Site{{Name: "store-1"}, {Name: "store-2"}}, VMs: []model.VirtualMachine{vm}},
		map[string]model.Inventory{"store-1": {Site: "store-1", Reported: true}, "store-2": {Site: "store-2", Reported: true}},
		diff.Options{Tenant: "acme", Commit: strings.Repeat("a", 40)})
	var text, js bytes.Buffer
	if err := diff.RenderText(&text, res, diff.RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := diff.RenderJSON(&js, res); err != nil {
		t.Fatal(err)
	}
	put := func(p store.Preview) {
		t.Helper()
		p.Tenant, p.RepoID = "acme", repo.ID
		if err := st.PutPreview(ctx, "acme", p); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	put(store.Preview{PR: 7, Commit: strings.Repeat("a", 40), Summary: diff.Summary(res), PlanText: text.String(), PlanJSON: json.RawMessage(bytes.TrimSpace(js.Bytes())), CreatedAt: now})
	converged := diff.Result{Sites: []diff.SiteResult{{Site: "store-2", Plan: model.Plan{Site: "store-2"}}}}
	var ctext, cjs bytes.Buffer
	_ = diff.RenderText(&ctext, converged, diff.RenderOptions{})
	_ = diff.RenderJSON(&cjs, converged)
	put(store.Preview{PR: 8, Commit: strings.Repeat("b", 40), Summary: "no changes", PlanText: ctext.String(), PlanJSON: cjs.Bytes(), CreatedAt: now})
	put(store.Preview{PR: 9, Commit: strings.Repeat("c", 40), Summary: "invalid: 1 error", PlanText: "sites/a.yaml:3: spec.cpus: must be at least 1\n", CreatedAt: now})
	put(store.Preview{PR: 10, Commit: strings.Repeat("d", 40), Summary: "no changes", PlanText: ctext.String(), PlanJSON: cjs.Bytes(), CreatedAt: now})
	if err := st.SetPreviewState(ctx, "acme", repo.ID, 10, store.PreviewMerged); err != nil {
		t.Fatal(err)
	}

	code, out, errs := nkudoctl(t, "preview", "7", "--color", "never")
	if code != exitChanges || out != text.String() {
		t.Errorf("preview 7: exit %d (want 1), output differs from diff's:\n%s\nwant:\n%s\n%s", code, out, text.String(), errs)
	}
	code, out, _ = nkudoctl(t, "preview", "7", "-o", "json")
	if code != exitChanges || out != js.String() {
		t.Errorf("preview 7 -o json: exit %d, output differs from diff's:\n%s\nwant:\n%s", code, out, js.String())
	}
	if code, out, errs := nkudoctl(t, "preview", "8"); code != exitOK || out != ctext.String() {
		t.Errorf("preview of a converged plan: exit %d, %q %s", code, out, errs)
	}
	code, out, errs = nkudoctl(t, "preview", "9")
	if code != exitError || out != "" || !strings.Contains(errs, "sites/a.yaml:3: spec.cpus") || !strings.Contains(errs, "invalid: 1 error") {
		t.Errorf("preview of an invalid head: exit %d, out %q, err %q", code, out, errs)
	}
	if code, _, errs := nkudoctl(t, "preview", "11"); code != exitError || !strings.Contains(errs, "not found") {
		t.Errorf("preview without one: exit %d, %s", code, errs)
	}
	if code, _, errs := nkudoctl(t, "preview"); code != exitError || !strings.Contains(errs, "--list") {
		t.Errorf("preview with neither: exit %d, %s", code, errs)
	}

	code, out, errs = nkudoctl(t, "preview", "--list")
	if code != exitOK || !strings.Contains(out, "#7") || !strings.Contains(out, "open") || !strings.Contains(out, "#9") || strings.Contains(out, "#10") {
		t.Errorf("preview --list: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = nkudoctl(t, "preview", "--list", "--all", "-o", "json")
	var rows []previewRow
	if err := json.Unmarshal([]byte(out), &rows); code != exitOK || err != nil || len(rows) != 4 || rows[3].PR != 10 || rows[3].State != "merged" {
		t.Errorf("preview --list --all -o json: exit %d, %v, %+v", code, err, rows)
	}

	// The accept label is the repository's setting.
	if code, out, errs := nkudoctl(t, "repos", "set", "fleet", "--destructive-label", "ops/destroy-ok"); code != exitOK {
		t.Fatalf("repos set --destructive-label: exit %d\n%s%s", code, out, errs)
	}
	if r, err := acme.Client.GetRepo(ctx, repo.ID); err != nil || r.DestructiveLabel != "ops/destroy-ok" {
		t.Errorf("destructive label after repos set = %q (%v)", r.DestructiveLabel, err)
	}
	if code, _, errs := nkudoctl(t, "repos", "set", "fleet", "--destructive-label", " padded"); code != exitError || !strings.Contains(errs, "destructiveLabel") {
		t.Errorf("a bad label: exit %d, %s", code, errs)
	}
	if code, out, _ := nkudoctl(t, "repos", "show", "fleet"); code != exitOK || !strings.Contains(out, "ops/destroy-ok") {
		t.Errorf("repos show does not name the label:\n%s", out)
	}
}
