package fleetsim

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/model"
)

// The hypervisor counts each call under its VM, operation and arguments:
// the same action twice is a duplicate, a different one is not.
func TestHypervisorCountsDuplicates(t *testing.T) {
	ctx := t.Context()
	h := NewHypervisor(0, 0)
	spec := model.VMSpec{CPUs: 1, MaxCPUs: 4, MemoryMiB: 256}
	for _, step := range []func() error{
		func() error { return h.Create(ctx, "a", spec) },
		func() error { return h.Start(ctx, "a") },
		func() error { return h.Resize(ctx, "a", 2, 256) },
		func() error { return h.Resize(ctx, "a", 3, 256) },
		func() error { return h.Start(ctx, "a") }, // the duplicate
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"a start ×2"}, h.Duplicates()); diff != "" {
		t.Errorf("duplicates (-want +got):\n%s", diff)
	}
	if calls, failed := h.Calls(); calls != 5 || failed != 0 {
		t.Errorf("calls %d, failed %d; want 5, 0", calls, failed)
	}
	want := map[string]model.ObservedVM{"a": {Name: "a", State: model.VMRunning, Managed: true, CPUs: 3, MemoryMiB: 256}}
	if !h.Matches(want) {
		vms, _ := h.List(ctx)
		t.Errorf("Matches(%v) = false; VMs %+v", want, vms)
	}
	want["a"] = model.ObservedVM{Name: "a", State: model.VMRunning, Managed: true, CPUs: 2, MemoryMiB: 256}
	if h.Matches(want) {
		t.Error("Matches a VM of another size")
	}
}

// Injected failures change nothing and are counted apart; a VM the
// hypervisor did not create is refused as unmanaged.
func TestHypervisorFailuresAndUnmanaged(t *testing.T) {
	ctx := t.Context()
	h := NewHypervisor(0, 0.999999)
	if err := h.Start(ctx, "a"); !errors.Is(err, ErrInjected) {
		t.Fatalf("start with failure rate ~1: %v, want ErrInjected", err)
	}
	if calls, failed := h.Calls(); calls != 0 || failed != 1 {
		t.Errorf("calls %d, failed %d; want 0, 1", calls, failed)
	}
	h = NewHypervisor(0, 0)
	h.vms["hand-made"] = model.ObservedVM{Name: "hand-made", State: model.VMRunning}
	if err := h.Delete(ctx, "hand-made"); !errors.Is(err, agent.ErrUnmanaged) {
		t.Errorf("delete an unmanaged VM: %v, want ErrUnmanaged", err)
	}
	if err := h.Start(ctx, "missing"); err == nil {
		t.Error("start of a missing VM succeeded")
	}
}

// The status sink lists what it was sent newest first, as Gitea does, and
// counts final nkudo/apply statuses per commit.
func TestStatusSinkCountsFinals(t *testing.T) {
	s, err := startStatusSink()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	post := func(sha, body string) {
		t.Helper()
		resp, err := http.Post(s.URL()+"/api/v1/repos/fleetsim/fleet/statuses/"+sha, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("post status: HTTP %d", resp.StatusCode)
		}
	}
	post("c1", `{"state":"pending","context":"nkudo/apply"}`)
	post("c1", `{"state":"success","context":"nkudo/apply"}`)
	post("c1", `{"state":"success","context":"nkudo/apply"}`)
	post("c2", `{"state":"failure","context":"nkudo/plan","description":"refused"}`)
	if n := s.finals("c1", "nkudo/apply"); n != 2 {
		t.Errorf("finals of c1: %d, want 2", n)
	}
	if st := s.state("c1", "nkudo/apply"); st != "success" {
		t.Errorf("state of c1: %q", st)
	}
	if f := s.failed("c2"); f != "nkudo/plan=failure: refused" {
		t.Errorf("failed(c2) = %q", f)
	}
	resp, err := http.Get(s.URL() + "/api/v1/repos/fleetsim/fleet/commits/c1/statuses?limit=50")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if got := b.String(); !strings.HasPrefix(got, `[{"state":"success"`) || strings.Count(got, "state") != 3 {
		t.Errorf("list c1: %s", got)
	}
	if s.total() != 4 {
		t.Errorf("total %d, want 4", s.total())
	}
}

func TestCheckSize(t *testing.T) {
	for _, tc := range []struct {
		sites, vms int
		ok         bool
	}{{1, 1, true}, {MaxSites, MaxVMs, true}, {0, 1, false}, {MaxSites + 1, 1, false}, {1, 0, false}, {1, MaxVMs + 1, false}} {
		if err := CheckSize(tc.sites, tc.vms, 0); (err == nil) != tc.ok {
			t.Errorf("CheckSize(%d, %d): %v", tc.sites, tc.vms, err)
		}
	}
}
