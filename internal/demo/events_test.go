package demo

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/schema"
)

func TestNarratorJSONPrintsOneEventPerLine(t *testing.T) {
	var b bytes.Buffer
	when := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	n := &narrator{w: &b, json: true, now: func() time.Time { return when }}
	n.emit(Event{Step: StepPlan, Commit: "abc", Message: "plan: 1 site", Detail: "site a\n  + create x", Data: map[string]any{"plans": []string{"p1"}}})
	n.say(StepDone, "done %d", 2)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), b.String())
	}
	var got []Event
	for _, l := range lines {
		var e Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, e)
	}
	want := []Event{
		{Time: when, Step: StepPlan, Commit: "abc", Message: "plan: 1 site", Detail: "site a\n  + create x", Data: map[string]any{"plans": []any{"p1"}}},
		{Time: when, Step: StepDone, Message: "done 2"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
}

func TestNarratorTextIndentsDetail(t *testing.T) {
	var b bytes.Buffer
	n := &narrator{w: &b, now: time.Now}
	n.emit(Event{Step: StepAction, Site: "store-042", Message: "create pos-1 succeeded"})
	n.emit(Event{Step: StepExplore, Message: "explore:", Detail: "a\nb"})
	want := "    store-042        create pos-1 succeeded\n\n==> explore:\n      a\n      b\n"
	if d := cmp.Diff(want, b.String()); d != "" {
		t.Errorf("text (-want +got):\n%s", d)
	}
}

func TestMakeChangeResizesWithinHeadroomAndAddsAVM(t *testing.T) {
	dir := t.TempDir()
	if err := copyFS(dir, os.DirFS("../../manifests-example")); err != nil {
		t.Fatal(err)
	}
	before, err := schema.Load(os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	c, err := makeChange(dir, before)
	if err != nil {
		t.Fatal(err)
	}
	after, err := schema.Load(os.DirFS(dir))
	if err != nil {
		t.Fatalf("the changed manifests are invalid: %v", err)
	}
	if len(after.VMs) != len(before.VMs)+1 {
		t.Errorf("VMs: %d before, %d after; want one more", len(before.VMs), len(after.VMs))
	}
	for _, vm := range after.VMs {
		if vm.Site != c.Site || vm.Name != c.Resized {
			continue
		}
		if vm.Spec.CPUs != c.ToCPUs || vm.Spec.MemoryMiB != c.ToMiB || c.ToCPUs <= c.FromCPUs {
			t.Errorf("%s after the change: cpus %d memory %d; change says %+v", vm.Name, vm.Spec.CPUs, vm.Spec.MemoryMiB, c)
		}
		if vm.Spec.CPUs > vm.Spec.EffectiveMaxCPUs() || vm.Spec.MemoryMiB > vm.Spec.EffectiveMaxMemoryMiB() {
			t.Errorf("%s grew beyond its headroom: a replace, not a resize", vm.Name)
		}
	}
	for _, vm := range before.VMs {
		if vm.Site == c.Site && vm.Name == c.Resized {
			continue
		}
		for _, a := range after.VMs {
			if a.Site == vm.Site && a.Name == vm.Name && a.Spec.Hash() != vm.Spec.Hash() {
				t.Errorf("%s/%s changed too", vm.Site, vm.Name)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, c.AddedFile)); err != nil {
		t.Errorf("added file: %v", err)
	}
}
