package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// The image store: content-addressed files under Options.ImageDir, one per
// digest (sha256/<hex>), shared by every tenant that pushed the same
// bytes; who owns which digest is in the store (store.Images). Files are
// written to tmp/ while the digest is computed, then renamed into place,
// so a reader never sees a partial file.

// Image defaults (Options).
const (
	DefaultMaxImageBytes   = 8 << 30
	DefaultImageQuotaBytes = 64 << 30
	DefaultImageGCGrace    = 24 * time.Hour
	DefaultMaxImages       = 1000
)

// imageGCActor deletes images no manifest references any more.
var imageGCActor = store.Actor{Kind: store.ActorSystem, ID: "image-gc"}

func (s *Server) imagePath(sum string) string {
	return filepath.Join(s.opts.ImageDir, "sha256", sum)
}

// imageURL is the agent-facing URL of an image: the control plane's own
// origin, so an agent fetches it over its mTLS connection.
func (s *Server) imageURL(r *http.Request, sum string) string {
	base := strings.TrimRight(s.opts.PublicURL, "/")
	if base == "" && r != nil {
		base = "https://" + r.Host
	}
	return base + api.Path(api.PathAgentImage, sum)
}

func (s *Server) imageView(r *http.Request, img store.Image) api.Image {
	_, err := os.Stat(s.imagePath(img.SHA256))
	return api.Image{SHA256: img.SHA256, Name: img.Name, Size: img.Size, URL: s.imageURL(r, img.SHA256),
		CreatedAt: img.CreatedAt, ReferencedAt: img.ReferencedAt, Missing: errors.Is(err, fs.ErrNotExist)}
}

func (s *Server) imagesEnabled() error {
	if s.opts.ImageDir == "" {
		return errorf(http.StatusNotImplemented, api.CodeNotImplemented, "this server has no image store (nkudo serve keeps one in its data dir)")
	}
	return nil
}

func checkDigest(sum string) error {
	if !store.ValidImageDigest(sum) {
		return badRequest("sha256 %q: want 64 lower-case hex digits", sum)
	}
	return nil
}

func (s *Server) handlePushImage(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.imagesEnabled(); err != nil {
		return err
	}
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "image"
	}
	if !store.ValidImageName(name) {
		return badRequest("name %q: want 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	want := r.URL.Query().Get("sha256")
	if want != "" {
		if err := checkDigest(want); err != nil {
			return err
		}
	}
	img, created, err := s.PushImage(r.Context(), c.actor(), c.tenant, name, want, r.ContentLength, r.Body)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, api.PushImageResponse{Image: s.imageView(r, img), Created: created})
	return nil
}

// PushImage streams body into the image store for tenant: refused as soon
// as it passes the size limit or the tenant's remaining quota (before, when
// length announces it), hashed while written, checked against want when
// given, and renamed into place. A digest already on disk is not written
// twice. created is false when the tenant already owned the digest.
func (s *Server) PushImage(ctx context.Context, actor store.Actor, tenant, name, want string, length int64, body io.Reader) (store.Image, bool, error) {
	used, err := s.store.ImageBytes(ctx, tenant)
	if err != nil {
		return store.Image{}, false, err
	}
	limit, quota := s.opts.MaxImageBytes, s.opts.ImageQuotaBytes
	room := max(quota-used, 0)
	tooLarge := func(n int64) error {
		if n > limit {
			return errorf(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "image is larger than the limit of %d bytes (nkudo serve --max-image-size)", limit)
		}
		return errorf(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "image would take the tenant over its image quota of %d bytes (%d in use; nkudo serve --image-quota)", quota, used)
	}
	if length > min(limit, room) {
		return store.Image{}, false, tooLarge(length)
	}
	tmpDir := filepath.Join(s.opts.ImageDir, "tmp")
	if err := os.MkdirAll(tmpDir, 0o750); err != nil {
		return store.Image{}, false, fmt.Errorf("image store: %w", err)
	}
	tmp, err := os.CreateTemp(tmpDir, "push-*")
	if err != nil {
		return store.Image{}, false, fmt.Errorf("image store: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	// Read one byte past the cap, to tell "exactly the cap" from "over it".
	capBytes := min(limit, room)
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(body, capBytes+1))
	if err == nil && n > capBytes {
		err = tooLarge(n)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = tooLarge(mbe.Limit + 1)
		}
		return store.Image{}, false, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		return store.Image{}, false, badRequest("sha256: the bytes received hash to %s, not %s (upload damaged in transit?)", sum, want)
	}
	// Rename and record under one lock, so a delete of the same digest
	// cannot remove the file between the two.
	s.imageMu.Lock()
	defer s.imageMu.Unlock()
	// Count under the lock, so concurrent pushes cannot pass the bound
	// together; a digest the tenant already owns adds nothing.
	owned, err := s.store.ListImages(ctx, tenant)
	if err != nil {
		return store.Image{}, false, err
	}
	if len(owned) >= s.opts.MaxImages && !slices.ContainsFunc(owned, func(i store.Image) bool { return i.SHA256 == sum }) {
		return store.Image{}, false, errorf(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "the tenant has %d images, the limit of %d: remove unused ones first (nkudoctl images rm)", len(owned), s.opts.MaxImages)
	}
	final := s.imagePath(sum)
	if err := os.MkdirAll(filepath.Dir(final), 0o750); err != nil {
		return store.Image{}, false, fmt.Errorf("image store: %w", err)
	}
	placed := false
	if _, err := os.Stat(final); errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(tmp.Name(), final); err != nil {
			return store.Image{}, false, fmt.Errorf("image store: %w", err)
		}
		placed = true
	} else if err != nil {
		return store.Image{}, false, fmt.Errorf("image store: %w", err)
	}
	img, created, err := s.store.PutImage(ctx, actor, store.Image{Tenant: tenant, SHA256: sum, Name: name, Size: n}, quota, s.now())
	if err != nil {
		if placed {
			s.removeIfUnowned(ctx, sum)
		}
		if errors.Is(err, store.ErrQuota) {
			return store.Image{}, false, errorf(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "%v (nkudo serve --image-quota)", err)
		}
		return store.Image{}, false, err
	}
	return img, created, nil
}

// removeIfUnowned deletes the file of a digest no tenant owns. The caller
// holds imageMu.
func (s *Server) removeIfUnowned(ctx context.Context, sum string) {
	owned, err := s.store.ImageOwned(ctx, sum)
	if err != nil || owned {
		return
	}
	if err := os.Remove(s.imagePath(sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("remove image file", "sha256", sum, "err", err)
	}
}

func (s *Server) handleListImages(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.imagesEnabled(); err != nil {
		return err
	}
	imgs, err := s.store.ListImages(r.Context(), c.tenant)
	if err != nil {
		return err
	}
	out := make([]api.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, s.imageView(r, img))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleGetImage(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.imagesEnabled(); err != nil {
		return err
	}
	sum := r.PathValue("sha256")
	if err := checkDigest(sum); err != nil {
		return err
	}
	img, err := s.store.GetImage(r.Context(), c.tenant, sum)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.imageView(r, img))
	return nil
}

func (s *Server) handleDeleteImage(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.imagesEnabled(); err != nil {
		return err
	}
	sum := r.PathValue("sha256")
	if err := checkDigest(sum); err != nil {
		return err
	}
	if err := s.deleteImage(r.Context(), c.actor(), c.tenant, sum); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteImage removes the tenant's record and, when no tenant owns the
// digest any more, its file.
func (s *Server) deleteImage(ctx context.Context, actor store.Actor, tenant, sum string) error {
	s.imageMu.Lock()
	defer s.imageMu.Unlock()
	orphaned, err := s.store.DeleteImage(ctx, actor, tenant, sum)
	if err != nil {
		return err
	}
	if orphaned {
		if err := os.Remove(s.imagePath(sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove image file: %w", err)
		}
	}
	return nil
}

// handleAgentImage serves an image to an agent of a tenant that owns it
// (Range requests included, so a large download can resume).
func (s *Server) handleAgentImage(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.imagesEnabled(); err != nil {
		return err
	}
	sum := r.PathValue("sha256")
	if err := checkDigest(sum); err != nil {
		return err
	}
	if _, err := s.store.GetImage(r.Context(), c.tenant, sum); err != nil {
		return err
	}
	f, err := os.Open(s.imagePath(sum))
	if errors.Is(err, fs.ErrNotExist) {
		return errorf(http.StatusNotFound, api.CodeNotFound, "image %s is recorded but its file is missing from the image store; push it again", sum)
	}
	if err != nil {
		return fmt.Errorf("open image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open image: %w", err)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"sha256:`+sum+`"`)
	// A download may take long on a slow link and costs no CPU: it must
	// not hold one of the agent-request slots heartbeats need.
	parked(r.Context())
	http.ServeContent(w, r, "", st.ModTime(), f)
	return nil
}

// ImageGC is what one garbage-collection pass did.
type ImageGC struct {
	Removed int // image records deleted
	Files   int // files deleted (unowned, or abandoned uploads)
	// Skipped lists tenants whose references could not be known this pass
	// (their images are kept).
	Skipped []string
}

// CollectImages deletes every tenant's images that no manifest references
// and that were neither pushed nor referenced within the grace period,
// then files no tenant owns and abandoned uploads older than it. A
// reference is a digest in the desired state the reconciler last applied
// (Options.Desired) or in a VM spec of any plan the store still keeps for
// the tenant. A tenant whose desired state cannot be read is skipped:
// when in doubt, keep. Audited per deletion (actor system:image-gc).
func (s *Server) CollectImages(ctx context.Context) (ImageGC, error) {
	var res ImageGC
	if s.opts.ImageDir == "" {
		return res, nil
	}
	now := s.now()
	cutoff := now.Add(-s.opts.ImageGCGrace)
	tenants, err := s.store.ListTenants(ctx)
	if err != nil {
		return res, fmt.Errorf("image gc: %w", err)
	}
	var errs []error
	for _, t := range tenants {
		imgs, err := s.store.ListImages(ctx, t.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(imgs) == 0 {
			continue
		}
		refs, known, err := s.imageRefs(ctx, t.ID)
		if err != nil {
			errs = append(errs, fmt.Errorf("image gc: references of %s: %w", t.ID, err))
			continue
		}
		if !known {
			res.Skipped = append(res.Skipped, t.ID)
			continue
		}
		var marked []string
		for _, img := range imgs {
			if refs[img.SHA256] {
				marked = append(marked, img.SHA256)
				continue
			}
			if img.CreatedAt.After(cutoff) || img.ReferencedAt.After(cutoff) {
				continue
			}
			if err := s.deleteImage(ctx, imageGCActor, t.ID, img.SHA256); err != nil && !errors.Is(err, store.ErrNotFound) {
				errs = append(errs, fmt.Errorf("image gc: %w", err))
				continue
			}
			res.Removed++
			s.log.Info("image garbage-collected", "tenant", t.ID, "sha256", img.SHA256, "name", img.Name)
		}
		if err := s.store.MarkImagesReferenced(ctx, t.ID, marked, now); err != nil {
			errs = append(errs, fmt.Errorf("image gc: %w", err))
		}
	}
	n, err := s.sweepImageFiles(ctx, cutoff)
	res.Files = n
	if err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// sweepImageFiles removes files no tenant owns (left by a tenant's purge,
// which removes rows only) and uploads abandoned mid-stream, both older
// than cutoff.
func (s *Server) sweepImageFiles(ctx context.Context, cutoff time.Time) (int, error) {
	n := 0
	for _, dir := range []string{"sha256", "tmp"} {
		entries, err := os.ReadDir(filepath.Join(s.opts.ImageDir, dir))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("image gc: %w", err)
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil || info.ModTime().After(cutoff) {
				continue
			}
			if dir == "sha256" {
				s.imageMu.Lock()
				owned, err := s.store.ImageOwned(ctx, e.Name())
				if err == nil && !owned {
					err = os.Remove(filepath.Join(s.opts.ImageDir, dir, e.Name()))
					if err == nil {
						n++
					}
				}
				s.imageMu.Unlock()
				if err != nil {
					return n, fmt.Errorf("image gc: %w", err)
				}
				continue
			}
			if err := os.Remove(filepath.Join(s.opts.ImageDir, dir, e.Name())); err == nil {
				n++
			}
		}
	}
	return n, nil
}

// imageRefs returns the digests the tenant's manifests reference: those
// in each site's desired state as last planned (recorded in the store with
// the plans) and in the VM specs of the plans the store keeps. known is
// false when a site was planned before the store kept desired-state
// documents and has not been reconciled since: its references are unknown.
func (s *Server) imageRefs(ctx context.Context, tenant string) (map[string]bool, bool, error) {
	refs := map[string]bool{}
	repos, err := s.store.ListRepositories(ctx, tenant)
	if err != nil {
		return nil, false, err
	}
	for _, r := range repos {
		sd, err := s.store.SiteDesired(ctx, tenant, r.ID)
		if err != nil {
			return nil, false, err
		}
		for _, d := range sd {
			if !d.Documented && d.Hash != "" {
				return nil, false, nil
			}
		}
	}
	sites, err := s.store.ListSites(ctx, tenant)
	if err != nil {
		return nil, false, err
	}
	for _, site := range sites {
		ds, err := s.store.DesiredState(ctx, tenant, site.Name)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, false, err
		default:
			for _, vm := range ds.VMs {
				addSpecDigests(refs, &vm.Spec)
			}
		}
		plans, err := s.store.ListPlans(ctx, tenant, store.PlanFilter{Site: site.Name, Limit: 1000, WithActions: true})
		if err != nil {
			return nil, false, err
		}
		for _, p := range plans {
			for _, a := range p.Plan.Actions {
				addSpecDigests(refs, a.Spec)
			}
		}
	}
	return refs, true, nil
}

// addSpecDigests adds every payload digest of spec (nil: none).
func addSpecDigests(refs map[string]bool, spec *model.VMSpec) {
	if spec == nil {
		return
	}
	add := func(sum string) {
		if sum = strings.ToLower(strings.TrimPrefix(sum, "sha256:")); sum != "" {
			refs[sum] = true
		}
	}
	if spec.Image != nil {
		add(spec.Image.SHA256)
	}
	if spec.Kernel != nil {
		add(spec.Kernel.SHA256)
		if spec.Kernel.Initramfs != nil {
			add(spec.Kernel.Initramfs.SHA256)
		}
	}
	if spec.Firmware != nil {
		add(spec.Firmware.SHA256)
	}
}

// RunImageGC collects images at once and then every interval until ctx
// ends, on one replica at a time (a store lease).
func (s *Server) RunImageGC(ctx context.Context, interval time.Duration, holder string) {
	const lease = "image-gc"
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := s.store.AcquireLease(ctx, lease, holder, 2*interval)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("image gc: acquire lease", "err", err)
		case ok:
			res, err := s.CollectImages(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Error("image gc failed", "err", err)
			}
			if len(res.Skipped) > 0 {
				s.log.Info("image gc skipped tenants whose desired state is not fully recorded; reconcile them to collect their images", "tenants", res.Skipped)
			}
		}
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = s.store.ReleaseLease(rctx, lease, holder)
			cancel()
			return
		case <-t.C:
		}
	}
}
