package reconciler_test

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/forge/forgetest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// planComments returns the n-kudo comments of pull request pr.
func (e *env) planComments(pr int) []forgetest.Comment {
	var out []forgetest.Comment
	for _, c := range e.forge.Comments(pr) {
		if strings.HasPrefix(c.Body, forge.PlanMarker("")+"\n") {
			out = append(out, c)
		}
	}
	return out
}

func (e *env) inventoryVersion(site string) int64 {
	e.t.Helper()
	inv, err := e.st.Inventory(e.t.Context(), tenant, site)
	if err != nil {
		e.t.Fatal(err)
	}
	return inv.Version
}

// TestPreviewRefresh: a site's new inventory re-previews the open pull
// request planned against it, and its one comment says which inventory
// moved; a second move within the interval waits for the interval (the
// fake clock), then both are one re-preview; a new commit on the branch
// re-previews it with "base moved"; a closed pull request is left alone.
func TestPreviewRefresh(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, threeSites, func(o *reconciler.Options) { o.Now = clk.Now; o.RefreshInterval = time.Minute })
	ctx := t.Context()
	e.git.Fleet("fleet", 3, 1)
	e.git.Commit("base")
	e.mustReconcile()
	repo, _ := e.st.GetRepository(ctx, tenant, e.repo.ID)
	e.git.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Stopped", 1))
	head := e.git.PushBranch("stop-vm", "stop vm-01")
	if _, err := e.rec.PreviewNow(ctx, repo, 7, head); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first comment", func() bool { c := e.planComments(7); return len(c) == 1 && strings.Contains(c[0].Body, head) })
	if c := e.planComments(7)[0].Body; !strings.Contains(c, "`site-0001` v0") || strings.Contains(c, "Re-computed") {
		t.Fatalf("first comment does not name the inventory versions, or claims a re-computation:\n%s", c)
	}

	// The agent of site-0001 reports its VM: a new inventory.
	e.heartbeat("site-0001", inventoryOf(desiredVMs([]string{"site-0001"}, 1, model.VMRunning), "site-0001"))
	v1 := e.inventoryVersion("site-0001")
	e.rec.InventoryChanged(ctx, tenant, "site-0001")
	e.rec.RefreshDue(ctx)
	if ran := e.rec.DrainQueue(ctx); ran["preview"] != 1 {
		t.Fatalf("after an inventory move ran %v, want one preview", ran)
	}
	moved := "inventory of site site-0001 moved from v0 to v" + itoa(v1)
	waitFor(t, "the re-computed comment", func() bool { c := e.planComments(7); return len(c) == 1 && strings.Contains(c[0].Body, moved) })

	// Again within the minute: held back, and then coalesced.
	e.heartbeat("site-0001", nil)
	v2 := e.inventoryVersion("site-0001")
	e.rec.InventoryChanged(ctx, tenant, "site-0001")
	e.rec.RefreshDue(ctx)
	e.heartbeat("site-0001", inventoryOf(desiredVMs([]string{"site-0001"}, 1, model.VMStopped), "site-0001"))
	v3 := e.inventoryVersion("site-0001")
	e.rec.InventoryChanged(ctx, tenant, "site-0001")
	e.rec.RefreshDue(ctx)
	if ran := e.rec.DrainQueue(ctx); len(ran) != 0 {
		t.Fatalf("a second move within the interval ran %v at once", ran)
	}
	clk.Add(59 * time.Second)
	e.rec.RefreshDue(ctx)
	if ran := e.rec.DrainQueue(ctx); len(ran) != 0 {
		t.Fatalf("59s after the last refresh ran %v", ran)
	}
	clk.Add(time.Second)
	e.rec.RefreshDue(ctx)
	if ran := e.rec.DrainQueue(ctx); ran["preview"] != 1 {
		t.Fatalf("a minute after the last refresh ran %v, want one preview for both moves", ran)
	}
	if v2 == v1 || v3 == v2 {
		t.Fatalf("heartbeats did not move the inventory: v%d, v%d, v%d", v1, v2, v3)
	}
	moved = "inventory of site site-0001 moved from v" + itoa(v1) + " to v" + itoa(v3)
	waitFor(t, "the second re-computed comment", func() bool { c := e.planComments(7); return len(c) == 1 && strings.Contains(c[0].Body, moved) })

	// The branch moves: re-previewed, saying so.
	clk.Add(time.Minute)
	e.git.Write("fleet/notes.txt", "not a manifest\n")
	base := e.git.Commit("unrelated change on main")
	e.mustReconcile()
	e.rec.RefreshDue(ctx)
	if ran := e.rec.DrainQueue(ctx); ran["preview"] != 1 {
		t.Fatalf("after the base moved ran %v, want one preview", ran)
	}
	waitFor(t, "the base-moved comment", func() bool {
		c := e.planComments(7)
		return len(c) == 1 && strings.Contains(c[0].Body, "base moved to "+base[:12])
	})
	if p, _ := e.st.GetPreview(ctx, tenant, e.repo.ID, 7); p.Base != base || p.Inventories["site-0001"] != v3 {
		t.Errorf("stored preview computed against base %s, inventories %v; want %s, site-0001 v%d", p.Base, p.Inventories, base, v3)
	}

	// Closed: no more refreshes.
	if err := e.rec.PreviewClosed(ctx, tenant, e.repo.ID, 7, false); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	e.heartbeat("site-0001", nil)
	e.rec.InventoryChanged(ctx, tenant, "site-0001")
	e.rec.RefreshDue(ctx)
	if ran := e.rec.DrainQueue(ctx); len(ran) != 0 {
		t.Errorf("a closed pull request was re-previewed: %v", ran)
	}
}

// TestPreviewRefreshLeavesNewerHead: a re-preview queued for the head
// last previewed never replaces a newer head's preview waiting in the
// queue (the one queue coalesces previews per pull request).
func TestPreviewRefreshLeavesNewerHead(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, threeSites, func(o *reconciler.Options) { o.Now = clk.Now })
	ctx := t.Context()
	e.git.Fleet("fleet", 3, 1)
	e.git.Commit("base")
	e.mustReconcile()
	repo, _ := e.st.GetRepository(ctx, tenant, e.repo.ID)
	e.git.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Stopped", 1))
	h1 := e.git.PushBranch("one", "stop vm-01")
	if _, err := e.rec.PreviewNow(ctx, repo, 7, h1); err != nil {
		t.Fatal(err)
	}
	e.git.Write("fleet/site-0002.yaml", gittest.Site("site-0002")+"---\n"+gittest.VM("site-0002", "vm-01", "Stopped", 1))
	h2 := e.git.PushBranch("two", "stop another")
	if err := e.rec.Preview(ctx, tenant, e.repo.ID, 7, h2); err != nil {
		t.Fatal(err)
	}
	e.heartbeat("site-0001", nil)
	e.rec.InventoryChanged(ctx, tenant, "site-0001")
	e.rec.RefreshDue(ctx) // offers a refresh of h1 while h2 waits
	clk.Add(time.Second)  // the newer preview is stored later
	if ran := e.rec.DrainQueue(ctx); ran["preview"] != 1 {
		t.Fatalf("ran %v, want the one waiting preview", ran)
	}
	p, err := e.st.GetPreview(ctx, tenant, e.repo.ID, 7)
	if err != nil || p.Commit != h2 {
		t.Fatalf("latest preview = %s (%v), want the newer head %s", p.Commit, err, h2)
	}
}

// TestPreviewClosedSurvivesRestart: the closed mark is stored, so after a
// restart (a new Reconciler on the same store) a preview queued before
// the close neither edits the comment nor reopens the pull request.
func TestPreviewClosedSurvivesRestart(t *testing.T) {
	e := newEnv(t, threeSites, nil)
	ctx := t.Context()
	e.git.Fleet("fleet", 3, 1)
	e.git.Commit("base")
	e.mustReconcile()
	repo, _ := e.st.GetRepository(ctx, tenant, e.repo.ID)
	e.git.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Stopped", 1))
	h1 := e.git.PushBranch("one", "stop vm-01")
	if _, err := e.rec.PreviewNow(ctx, repo, 7, h1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the comment", func() bool { return len(e.planComments(7)) == 1 })
	if err := e.rec.PreviewClosed(ctx, tenant, e.repo.ID, 7, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the merged comment", func() bool { c := e.planComments(7); return len(c) == 1 && strings.Contains(c[0].Body, "was merged") })
	e.rec.WaitComments(e.repo.ID)
	e.rec.Close()

	restarted, err := reconciler.New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restarted.Close)
	e.git.Write("fleet/site-0002.yaml", gittest.Site("site-0002")+"---\n"+gittest.VM("site-0002", "vm-01", "Stopped", 1))
	h2 := e.git.PushBranch("two", "stop another")
	if _, err := restarted.PreviewNow(ctx, repo, 7, h2); err != nil {
		t.Fatal(err)
	}
	restarted.WaitComments(e.repo.ID)
	if c := e.planComments(7); len(c) != 1 || !strings.Contains(c[0].Body, "was merged") {
		t.Errorf("after a restart a late preview rewrote the comment: %+v", c)
	}
	if p, _ := e.st.GetPreview(ctx, tenant, e.repo.ID, 7); p.State != store.PreviewMerged {
		t.Errorf("stored state after the late preview = %q, want merged", p.State)
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
