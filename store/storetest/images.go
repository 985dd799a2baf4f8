package storetest

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/store"
)

func testImages(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	d1 := strings.Repeat("a1", 32)
	d2 := strings.Repeat("b2", 32)

	img, created, err := s.PutImage(ctx, admin, store.Image{Tenant: tenantA, SHA256: d1, Name: "vmlinuz", Size: 100}, 0, epoch)
	must(t, err)
	if !created || img.Size != 100 || !img.CreatedAt.Equal(epoch) || !img.ReferencedAt.IsZero() {
		t.Fatalf("PutImage = %+v, %v", img, created)
	}
	// The same digest again is the same record: no second row, no new size.
	again, created, err := s.PutImage(ctx, admin, store.Image{Tenant: tenantA, SHA256: d1, Name: "vmlinuz", Size: 100}, 0, epoch.Add(time.Hour))
	must(t, err)
	if created || !again.CreatedAt.Equal(epoch) {
		t.Errorf("PutImage of an owned digest = %+v, created %v", again, created)
	}
	// Another tenant may own the same digest: its own row.
	putImage(t, s, admin, store.Image{Tenant: tenantB, SHA256: d1, Name: "kernel", Size: 100}, 0, epoch)
	putImage(t, s, admin, store.Image{Tenant: tenantA, SHA256: d2, Name: "disk.raw", Size: 50}, 0, epoch)

	list := mustGet(s.ListImages(ctx, tenantA))(t)
	if len(list) != 2 || list[0].Name != "disk.raw" || list[1].Name != "vmlinuz" {
		t.Fatalf("ListImages(A) = %+v", list)
	}
	if n := mustGet(s.ImageBytes(ctx, tenantA))(t); n != 150 {
		t.Errorf("ImageBytes(A) = %d, want 150", n)
	}
	// B does not see A's d2, and cannot delete it.
	_, err = s.GetImage(ctx, tenantB, d2)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.DeleteImage(ctx, admin, tenantB, d2)
	wantErr(t, err, store.ErrNotFound)
	if l := mustGet(s.ListImages(ctx, tenantB))(t); len(l) != 1 || l[0].Name != "kernel" {
		t.Errorf("ListImages(B) = %+v", l)
	}

	// Quota: a new image over it is refused; an owned one is not counted twice.
	_, _, err = s.PutImage(ctx, admin, store.Image{Tenant: tenantA, SHA256: strings.Repeat("c3", 32), Name: "big", Size: 51}, 200, epoch)
	wantErr(t, err, store.ErrQuota)
	putImage(t, s, admin, store.Image{Tenant: tenantA, SHA256: d1, Name: "vmlinuz", Size: 100}, 150, epoch)

	// Bad input names the field.
	for _, bad := range []store.Image{
		{Tenant: tenantA, SHA256: "ABC", Name: "x"},
		{Tenant: tenantA, SHA256: strings.Repeat("A1", 32), Name: "x"},
		{Tenant: tenantA, SHA256: d1, Name: "../x"},
		{Tenant: tenantA, SHA256: d1, Name: "x", Size: -1},
	} {
		_, _, err := s.PutImage(ctx, admin, bad, 0, epoch)
		wantErr(t, err, store.ErrInvalid)
	}
	_, _, err = s.PutImage(ctx, admin, store.Image{Tenant: "nobody", SHA256: d1, Name: "x"}, 0, epoch)
	wantErr(t, err, store.ErrNotFound)

	// Referenced marks only the tenant's own rows.
	must(t, s.MarkImagesReferenced(ctx, tenantB, []string{d1, d2}, epoch.Add(2*time.Hour)))
	if got := mustGet(s.GetImage(ctx, tenantB, d1))(t); !got.ReferencedAt.Equal(epoch.Add(2 * time.Hour)) {
		t.Errorf("B's d1 referenced at %v", got.ReferencedAt)
	}
	if got := mustGet(s.GetImage(ctx, tenantA, d1))(t); !got.ReferencedAt.IsZero() {
		t.Errorf("A's d1 marked by B's references: %v", got.ReferencedAt)
	}

	// Deleting reports whether anyone still owns the digest.
	orphaned, err := s.DeleteImage(ctx, admin, tenantA, d1)
	must(t, err)
	if orphaned || !mustGet(s.ImageOwned(ctx, d1))(t) {
		t.Errorf("d1 orphaned %v while B owns it", orphaned)
	}
	orphaned, err = s.DeleteImage(ctx, admin, tenantB, d1)
	must(t, err)
	if !orphaned || mustGet(s.ImageOwned(ctx, d1))(t) {
		t.Errorf("d1 orphaned %v after its last owner deleted it", orphaned)
	}

	// Every mutation is audited.
	evs := mustGet(s.ListAudit(ctx, tenantA, 0, 1000))(t)
	var actions []string
	for _, e := range evs {
		if strings.HasPrefix(e.Action, "image.") {
			actions = append(actions, e.Action)
		}
	}
	if strings.Join(actions, ",") != "image.push,image.push,image.delete" {
		t.Errorf("A's image audit events = %v", actions)
	}

	// A tenant's purge takes its rows.
	must(t, s.DeleteTenant(ctx, admin, tenantA))
	if mustGet(s.ImageOwned(ctx, d2))(t) {
		t.Error("a purged tenant still owns its image")
	}
}

// testImageQuotaConcurrent: concurrent pushes of one tenant never add up
// past its quota.
func testImageQuotaConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := strings.Repeat(string("0123456789abcdef"[i]), 64)
			_, _, err := s.PutImage(ctx, admin, store.Image{Tenant: tenantA, SHA256: d, Name: "x", Size: 10}, 35, epoch)
			if err != nil && !errors.Is(err, store.ErrQuota) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := mustGet(s.ImageBytes(ctx, tenantA))(t); n != 30 {
		t.Errorf("ImageBytes = %d after concurrent pushes under a quota of 35, want 30", n)
	}
}

func putImage(t testing.TB, s store.Store, actor store.Actor, img store.Image, quota int64, now time.Time) {
	t.Helper()
	if _, _, err := s.PutImage(t.Context(), actor, img, quota, now); err != nil {
		t.Fatal(err)
	}
}
