package controlplane_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func push(t *testing.T, c *api.Client, name string, b []byte) api.PushImageResponse {
	t.Helper()
	res, err := c.PushImage(t.Context(), name, digest(b), int64(len(b)), bytes.NewReader(b))
	if err != nil {
		t.Fatalf("push %s: %v", name, err)
	}
	return res
}

func imageFile(env *cptest.Env, sum string) string {
	return filepath.Join(env.DataDir, "images", "sha256", sum)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// fetch downloads an image over the agent's mTLS client, as the agent's
// image cache does.
func fetch(t *testing.T, a *cptest.Agent, url string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := a.Client.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, b
}

func TestImagePushListRemove(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	kernel := bytes.Repeat([]byte("vmlinuz "), 1000)
	sum := digest(kernel)

	res := push(t, acme.Client, "vmlinuz", kernel)
	if !res.Created || res.SHA256 != sum || res.Size != int64(len(kernel)) || res.Name != "vmlinuz" {
		t.Fatalf("push = %+v", res)
	}
	if want := env.URL + "/v1/agent/images/sha256/" + sum; res.URL != want {
		t.Errorf("URL = %s, want %s", res.URL, want)
	}
	if b, err := os.ReadFile(imageFile(env, sum)); err != nil || !bytes.Equal(b, kernel) {
		t.Fatalf("stored file: %v", err)
	}
	// The same bytes again: the same image, not a second one.
	if again := push(t, acme.Client, "vmlinuz", kernel); again.Created {
		t.Errorf("second push created a new image: %+v", again)
	}
	list, err := acme.Client.ListImages(t.Context())
	if err != nil || len(list) != 1 || list[0].SHA256 != sum {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if got, err := acme.Client.GetImage(t.Context(), sum); err != nil || got.Name != "vmlinuz" {
		t.Errorf("get = %+v, %v", got, err)
	}

	// A digest the bytes do not have is refused and nothing is kept.
	other := []byte("initramfs")
	_, err = acme.Client.PushImage(t.Context(), "initrd", sum, int64(len(other)), bytes.NewReader(other))
	if !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("push with a wrong digest: %v", err)
	}
	if exists(imageFile(env, digest(other))) {
		t.Error("a push refused for its digest left its file")
	}

	// A file lost from the store shows as missing; pushing again restores it.
	if err := os.Remove(imageFile(env, sum)); err != nil {
		t.Fatal(err)
	}
	if got, err := acme.Client.GetImage(t.Context(), sum); err != nil || !got.Missing {
		t.Errorf("get with the file gone = %+v, %v", got, err)
	}
	if again := push(t, acme.Client, "vmlinuz", kernel); again.Created || again.Missing || !exists(imageFile(env, sum)) {
		t.Errorf("push to restore a lost file = %+v", again)
	}

	if err := acme.Client.DeleteImage(t.Context(), sum); err != nil {
		t.Fatal(err)
	}
	if exists(imageFile(env, sum)) {
		t.Error("the file of a deleted image with no other owner is still there")
	}
	if _, err := acme.Client.GetImage(t.Context(), sum); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	if err := acme.Client.DeleteImage(t.Context(), sum); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("delete twice: %v", err)
	}
	evs, err := env.Store().ListAudit(t.Context(), "acme", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range evs {
		if strings.HasPrefix(e.Action, "image.") {
			actions = append(actions, e.Action+" "+e.Actor)
		}
	}
	if len(actions) != 2 || !strings.HasPrefix(actions[0], "image.push token:") || !strings.HasPrefix(actions[1], "image.delete token:") {
		t.Errorf("audit = %v", actions)
	}
}

// TestImageTenantIsolation: ownership is per tenant even for the same
// bytes; an agent fetches only its own tenant's images, over mTLS.
func TestImageTenantIsolation(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	alpha, bravo := env.NewTenant("alpha"), env.NewTenant("bravo")
	shared := []byte("a kernel both tenants push")
	private := []byte("alpha's own disk image")
	push(t, alpha.Client, "shared", shared)
	pa := push(t, alpha.Client, "private", private)
	if res := push(t, bravo.Client, "shared", shared); !res.Created {
		t.Errorf("bravo's push of bytes alpha has was not bravo's own: %+v", res)
	}

	// Bravo cannot see, delete or list alpha's private image.
	if _, err := bravo.Client.GetImage(t.Context(), pa.SHA256); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bravo gets alpha's image: %v", err)
	}
	if err := bravo.Client.DeleteImage(t.Context(), pa.SHA256); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bravo deletes alpha's image: %v", err)
	}
	if l, _ := bravo.Client.ListImages(t.Context()); len(l) != 1 || l[0].Name != "shared" {
		t.Errorf("bravo lists %+v", l)
	}

	a1 := env.Enroll("alpha", "a1")
	b1 := env.Enroll("bravo", "b1")
	if status, b := fetch(t, a1, pa.URL); status != http.StatusOK || !bytes.Equal(b, private) {
		t.Errorf("alpha's agent fetch: %d", status)
	}
	if status, b := fetch(t, b1, pa.URL); status != http.StatusNotFound || bytes.Contains(b, private) {
		t.Errorf("bravo's agent fetches alpha's image: %d %s", status, b)
	}
	// Without a client certificate the route is closed.
	resp, err := env.HTTPClient(nil).Get(pa.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("fetch without a certificate: %d", resp.StatusCode)
	}

	// Bravo deleting its copy keeps the bytes alpha still owns.
	if err := bravo.Client.DeleteImage(t.Context(), digest(shared)); err != nil {
		t.Fatal(err)
	}
	if status, b := fetch(t, a1, env.URL+api.Path(api.PathAgentImage, digest(shared))); status != http.StatusOK || !bytes.Equal(b, shared) {
		t.Errorf("alpha lost the shared image when bravo deleted its copy: %d", status)
	}
	if status, _ := fetch(t, b1, env.URL+api.Path(api.PathAgentImage, digest(shared))); status != http.StatusNotFound {
		t.Errorf("bravo's agent still fetches the image bravo deleted: %d", status)
	}
}

// TestImageSizeLimits: an image over the size limit or the tenant's quota
// is refused while it streams (the rest of the body is never waited for)
// and leaves nothing behind.
func TestImageSizeLimits(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) {
		o.MaxImageBytes = 4096
		o.ImageQuotaBytes = 6000
	}})
	acme := env.NewTenant("acme")

	// Announced too large: refused before reading.
	big := bytes.Repeat([]byte{1}, 5000)
	_, err := acme.Client.PushImage(t.Context(), "big", "", int64(len(big)), bytes.NewReader(big))
	if !errors.Is(err, api.ErrTooLarge) || !strings.Contains(err.Error(), "--max-image-size") {
		t.Errorf("announced oversize push: %v", err)
	}

	// Unannounced (chunked) and never ending: refused once the limit is
	// passed. The writer blocks after the limit; only a server that stops
	// reading there answers at all.
	pr, pw := io.Pipe()
	go func() {
		chunk := bytes.Repeat([]byte{2}, 1024)
		for {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { pw.CloseWithError(errors.New("test over")) })
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // a guard against a hang, not a timing assertion
	defer cancel()
	_, err = acme.Client.PushImage(ctx, "endless", "", -1, pr)
	if !errors.Is(err, api.ErrTooLarge) {
		t.Errorf("endless push: %v", err)
	}

	// The quota counts the tenant's total.
	push(t, acme.Client, "one", bytes.Repeat([]byte{3}, 4000))
	_, err = acme.Client.PushImage(t.Context(), "two", "", 3000, bytes.NewReader(bytes.Repeat([]byte{4}, 3000)))
	if !errors.Is(err, api.ErrTooLarge) || !strings.Contains(err.Error(), "quota") {
		t.Errorf("push over the quota: %v", err)
	}
	_, err = acme.Client.PushImage(t.Context(), "two", "", -1, bytes.NewReader(bytes.Repeat([]byte{4}, 3000)))
	if !errors.Is(err, api.ErrTooLarge) || !strings.Contains(err.Error(), "quota") {
		t.Errorf("unannounced push over the quota: %v", err)
	}

	list, _ := acme.Client.ListImages(t.Context())
	if len(list) != 1 {
		t.Errorf("images after refused pushes: %+v", list)
	}
	for _, dir := range []string{"tmp", "sha256"} {
		entries, _ := os.ReadDir(filepath.Join(env.DataDir, "images", dir))
		if want := map[string]int{"tmp": 0, "sha256": 1}[dir]; len(entries) != want {
			t.Errorf("%s holds %d files after refused pushes, want %d", dir, len(entries), want)
		}
	}
}

// TestImageGC: after the grace period an image no manifest references is
// removed (record, file, audit); one referenced by the desired state or
// by a stored plan's VM spec is kept.
func TestImageGC(t *testing.T) {
	clock := &cptest.Clock{}
	inDesired := []byte("kernel named by the desired state")
	inPlan := []byte("disk image named by a plan")
	unused := []byte("an image nobody names")
	env := cptest.Start(t, cptest.Options{Clock: clock})
	acme := env.NewTenant("acme")
	env.NewSite("acme", "s1")
	for name, b := range map[string][]byte{"desired": inDesired, "plan": inPlan, "unused": unused} {
		push(t, acme.Client, name, b)
	}
	st, sys := env.Store(), store.Actor{Kind: store.ActorSystem, ID: "test"}
	repo, err := st.CreateRepository(t.Context(), sys, store.Repository{Tenant: "acme", Name: "fleet", URL: "https://git.example.net/fleet.git"}, "")
	if err != nil {
		t.Fatal(err)
	}
	vms := []model.VirtualMachine{{Name: "vm1", Site: "s1", Spec: model.VMSpec{Kernel: &model.Kernel{URL: "https://x/k", SHA256: digest(inDesired)}}}}
	if _, err := st.RecordSitePlan(t.Context(), sys, "acme", repo.ID, store.SiteDesired{Site: "s1", Hash: "h1", Commit: "c1", UpdatedAt: clock.Now(), VMs: vms}, nil, clock.Now()); err != nil {
		t.Fatal(err)
	}
	spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256, Image: &model.Image{URL: "https://x/d", SHA256: "sha256:" + digest(inPlan)}}
	plan := model.Plan{ID: "p1", Tenant: "acme", Site: "s1", Actions: []model.Action{{ID: "a1", Operation: model.OpCreate, VM: "vm2", Reason: model.ReasonMissing, Spec: &spec, SpecHash: spec.Hash()}}}
	if _, err := st.StorePlan(t.Context(), sys, plan, "", clock.Now()); err != nil {
		t.Fatal(err)
	}

	// Within the grace period nothing goes.
	res, err := env.Server().CollectImages(t.Context())
	if err != nil || res.Removed != 0 {
		t.Fatalf("collect within grace = %+v, %v", res, err)
	}
	clock.Advance(25 * time.Hour)
	res, err = env.Server().CollectImages(t.Context())
	if err != nil || res.Removed != 1 {
		t.Fatalf("collect after grace = %+v, %v", res, err)
	}
	list, err := acme.Client.ListImages(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, img := range list {
		names = append(names, img.Name)
		if img.ReferencedAt.IsZero() {
			t.Errorf("kept image %s not marked referenced", img.Name)
		}
	}
	if strings.Join(names, ",") != "desired,plan" {
		t.Errorf("kept %v, want desired,plan", names)
	}
	if exists(imageFile(env, digest(unused))) || !exists(imageFile(env, digest(inPlan))) {
		t.Error("files do not follow the records")
	}
	evs, _ := env.Store().ListAudit(t.Context(), "acme", 0, 1000)
	if last := evs[len(evs)-1]; last.Action != "image.delete" || last.Actor != "system:image-gc" {
		t.Errorf("last audit event = %s by %s", last.Action, last.Actor)
	}
}

// TestImageGCUnknownDesired: a tenant with a site whose desired state was
// recorded without its documents (before the store kept them) keeps all
// its images.
func TestImageGCUnknownDesired(t *testing.T) {
	clock := &cptest.Clock{}
	env := cptest.Start(t, cptest.Options{Clock: clock})
	acme := env.NewTenant("acme")
	env.NewSite("acme", "s1")
	push(t, acme.Client, "x", []byte("x"))
	st, sys := env.Store(), store.Actor{Kind: store.ActorSystem, ID: "test"}
	repo, err := st.CreateRepository(t.Context(), sys, store.Repository{Tenant: "acme", Name: "fleet", URL: "https://git.example.net/fleet.git"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetSiteDesired(t.Context(), "acme", repo.ID, store.SiteDesired{Site: "s1", Hash: "h1", Commit: "c1", UpdatedAt: clock.Now()}); err != nil {
		t.Fatal(err)
	}
	raw, ok := st.(interface {
		ExecRaw(ctx context.Context, query string, args ...any) error
	})
	if !ok {
		t.Fatal("the test store cannot run raw SQL")
	}
	// What migration 0007 leaves for a site planned before it: no documents.
	if err := raw.ExecRaw(t.Context(), `UPDATE site_desired SET state = ''`); err != nil {
		t.Fatal(err)
	}
	clock.Advance(48 * time.Hour)
	res, err := env.Server().CollectImages(t.Context())
	if err != nil || res.Removed != 0 || len(res.Skipped) != 1 {
		t.Fatalf("collect = %+v, %v", res, err)
	}
}

// TestImageCountLimit: a tenant at the image count limit cannot add a new
// digest (it can push one it owns again), and another tenant is unaffected.
func TestImageCountLimit(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) { o.MaxImages = 2 }})
	acme, globex := env.NewTenant("acme"), env.NewTenant("globex")
	push(t, acme.Client, "a", []byte("image a"))
	push(t, acme.Client, "b", []byte("image b"))
	_, err := acme.Client.PushImage(t.Context(), "c", "", -1, bytes.NewReader([]byte("image c")))
	if !errors.Is(err, api.ErrTooLarge) || !strings.Contains(err.Error(), "limit of 2") {
		t.Errorf("third image: %v", err)
	}
	if _, err := acme.Client.PushImage(t.Context(), "a", "", -1, bytes.NewReader([]byte("image a"))); err != nil {
		t.Errorf("pushing an owned image again at the limit: %v", err)
	}
	push(t, globex.Client, "c", []byte("image c"))
	if list, _ := acme.Client.ListImages(t.Context()); len(list) != 2 {
		t.Errorf("acme holds %d images, want 2", len(list))
	}
}
