package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nkudo/nkudo/store"
)

const imageCols = `tenant, sha256, name, size, created_at, referenced_at`

func scanImage(r Row) (store.Image, error) {
	var img store.Image
	var created, referenced int64
	err := r.Scan(&img.Tenant, &img.SHA256, &img.Name, &img.Size, &created, &referenced)
	img.CreatedAt, img.ReferencedAt = tm(created), tm(referenced)
	return img, err
}

func imageAudit(img store.Image) map[string]any {
	return map[string]any{"sha256": img.SHA256, "name": img.Name, "size": img.Size}
}

// PutImage implements store.Images.
func (s *Store) PutImage(ctx context.Context, actor store.Actor, img store.Image, quota int64, now time.Time) (store.Image, bool, error) {
	fail := func(err error) (store.Image, bool, error) {
		return store.Image{}, false, fmt.Errorf("put image %s/%s: %w", img.Tenant, img.SHA256, err)
	}
	switch {
	case !store.ValidImageDigest(img.SHA256):
		return fail(errInvalid("sha256 %q: want 64 lower-case hex digits", img.SHA256))
	case img.Size < 0:
		return fail(errInvalid("size %d: must not be negative", img.Size))
	case !store.ValidImageName(img.Name):
		return fail(errInvalid("name %q: want 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", img.Name))
	}
	var out store.Image
	created := false
	err := s.write(ctx, func(t *wtx) error {
		// The tenant's row is the lock that serialises its pushes, so two
		// concurrent pushes cannot both fit under the quota's last byte.
		var one int
		if err := t.QueryRow(ctx, `SELECT 1 FROM tenants WHERE id = $1`+s.d.ForUpdate, img.Tenant).Scan(&one); err != nil {
			return fmt.Errorf("tenant %s: %w", img.Tenant, s.notFound(err))
		}
		old, err := scanImage(t.QueryRow(ctx, `SELECT `+imageCols+` FROM images WHERE tenant = $1 AND sha256 = $2`, img.Tenant, img.SHA256))
		switch err = s.notFound(err); {
		case err == nil:
			out = old
			if img.Name == old.Name {
				return nil
			}
			if _, err := t.Exec(ctx, `UPDATE images SET name = $3 WHERE tenant = $1 AND sha256 = $2`, img.Tenant, img.SHA256, img.Name); err != nil {
				return err
			}
			out.Name = img.Name
			t.audit(img.Tenant, actor, "image.rename", "image/"+img.SHA256, imageAudit(out))
			return nil
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		if quota > 0 {
			var used int64
			if err := t.QueryRow(ctx, `SELECT COALESCE(SUM(size), 0) FROM images WHERE tenant = $1`, img.Tenant).Scan(&used); err != nil {
				return err
			}
			if used+img.Size > quota {
				return fmt.Errorf("the tenant's images would total %d bytes, over its quota of %d (%d in use): %w", used+img.Size, quota, used, store.ErrQuota)
			}
		}
		out = store.Image{Tenant: img.Tenant, SHA256: img.SHA256, Name: img.Name, Size: img.Size, CreatedAt: store.Micro(now)}
		if _, err := t.Exec(ctx, `INSERT INTO images (tenant, sha256, name, size, created_at, referenced_at) VALUES ($1, $2, $3, $4, $5, 0)`,
			out.Tenant, out.SHA256, out.Name, out.Size, us(out.CreatedAt)); err != nil {
			return err
		}
		created = true
		t.audit(img.Tenant, actor, "image.push", "image/"+img.SHA256, imageAudit(out))
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return out, created, nil
}

// GetImage implements store.Images.
func (s *Store) GetImage(ctx context.Context, tenant, sha256 string) (store.Image, error) {
	var img store.Image
	err := s.read1(ctx, func(c Conn) (err error) {
		img, err = scanImage(c.QueryRow(ctx, `SELECT `+imageCols+` FROM images WHERE tenant = $1 AND sha256 = $2`, tenant, sha256))
		return s.notFound(err)
	})
	if err != nil {
		return store.Image{}, fmt.Errorf("get image %s/%s: %w", tenant, sha256, err)
	}
	return img, nil
}

// ListImages implements store.Images.
func (s *Store) ListImages(ctx context.Context, tenant string) ([]store.Image, error) {
	out, err := readAll(ctx, s, scanImage, `SELECT `+imageCols+` FROM images WHERE tenant = $1 ORDER BY name, sha256`, tenant)
	if err != nil {
		return nil, fmt.Errorf("list images of %s: %w", tenant, err)
	}
	return out, nil
}

// ImageBytes implements store.Images.
func (s *Store) ImageBytes(ctx context.Context, tenant string) (int64, error) {
	var n int64
	err := s.read1(ctx, func(c Conn) error {
		return c.QueryRow(ctx, `SELECT COALESCE(SUM(size), 0) FROM images WHERE tenant = $1`, tenant).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("image bytes of %s: %w", tenant, err)
	}
	return n, nil
}

// DeleteImage implements store.Images.
func (s *Store) DeleteImage(ctx context.Context, actor store.Actor, tenant, sha256 string) (bool, error) {
	orphaned := false
	err := s.write(ctx, func(t *wtx) error {
		img, err := scanImage(t.QueryRow(ctx, `SELECT `+imageCols+` FROM images WHERE tenant = $1 AND sha256 = $2`, tenant, sha256))
		if err := s.notFound(err); err != nil {
			return err
		}
		if _, err := t.Exec(ctx, `DELETE FROM images WHERE tenant = $1 AND sha256 = $2`, tenant, sha256); err != nil {
			return err
		}
		var n int64
		if err := t.QueryRow(ctx, `SELECT COUNT(*) FROM images WHERE sha256 = $1`, sha256).Scan(&n); err != nil {
			return err
		}
		orphaned = n == 0
		t.audit(tenant, actor, "image.delete", "image/"+sha256, imageAudit(img))
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("delete image %s/%s: %w", tenant, sha256, err)
	}
	return orphaned, nil
}

// MarkImagesReferenced implements store.Images.
func (s *Store) MarkImagesReferenced(ctx context.Context, tenant string, digests []string, now time.Time) error {
	if len(digests) == 0 {
		return nil
	}
	err := s.write(ctx, func(t *wtx) error {
		for _, d := range digests {
			if _, err := t.Exec(ctx, `UPDATE images SET referenced_at = $3 WHERE tenant = $1 AND sha256 = $2`, tenant, d, us(store.Micro(now))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark images of %s referenced: %w", tenant, err)
	}
	return nil
}

// ImageOwned implements store.Images.
func (s *Store) ImageOwned(ctx context.Context, sha256 string) (bool, error) {
	var n int64
	err := s.read1(ctx, func(c Conn) error {
		return c.QueryRow(ctx, `SELECT COUNT(*) FROM images WHERE sha256 = $1`, sha256).Scan(&n)
	})
	if err != nil {
		return false, fmt.Errorf("image %s owned: %w", sha256, err)
	}
	return n > 0, nil
}
