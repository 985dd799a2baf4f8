package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/nkudo/nkudo/api"
)

// ImagesCmd manages the tenant's images on the control plane.
type ImagesCmd struct {
	List ImagesListCmd `cmd:"" default:"withargs" help:"List the tenant's images (the default)."`
	Push ImagesPushCmd `cmd:"" help:"Upload a kernel, initramfs, firmware or disk image and print its manifest snippet."`
	Rm   ImagesRmCmd   `cmd:"" name:"rm" help:"Remove an image."`
}

// ImagesListCmd lists images.
type ImagesListCmd struct{}

// Run lists.
func (c *ImagesListCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	imgs, err := client.ListImages(ctx)
	if err != nil {
		return fmt.Errorf("list images: %w", err)
	}
	if g.Output == "json" {
		return writeJSON(s, imgs)
	}
	w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSHA256\tSIZE\tPUSHED\tLAST REFERENCED")
	for _, img := range imgs {
		ref := "never"
		if !img.ReferencedAt.IsZero() {
			ref = img.ReferencedAt.Format("2006-01-02 15:04")
		}
		if img.Missing {
			ref += " (file missing: push it again)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", img.Name, img.SHA256, humanBytes(img.Size), img.CreatedAt.Format("2006-01-02 15:04"), ref)
	}
	return w.Flush()
}

// ImagesPushCmd uploads an image.
type ImagesPushCmd struct {
	File string `arg:"" type:"path" help:"The file to upload."`
	Name string `help:"Label shown by images list (default: the file's name)."`
}

// Help is the long help text.
func (c *ImagesPushCmd) Help() string {
	return `Uploads FILE into your tenant's image store on the control plane and prints
the url and sha256 to put in a VirtualMachine manifest (spec.image,
spec.kernel, spec.kernel.initramfs or spec.firmware). Agents fetch it from the
control plane over their own mTLS connection, so sites need no other egress,
and check its sha256 as for any URL.

The digest is computed locally first; an image your tenant already has is not
uploaded again. The server streams the upload to disk, refuses it once it passes
the size limit or your tenant's quota, and removes images no manifest has
named for a grace period (24 h by default). Examples:

  nkudoctl images push ./vmlinuz
  nkudoctl images push ./debian-12.raw --name debian-12
  nkudoctl -o json images push ./initrd.img`
}

// Run hashes, uploads and prints the snippet.
func (c *ImagesPushCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	name := c.Name
	if name == "" {
		name = filepath.Base(c.File)
	}
	f, err := os.Open(c.File)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", c.File)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hash %s: %w", c.File, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	var res api.PushImageResponse
	if img, err := client.GetImage(ctx, sum); err == nil && !img.Missing {
		res.Image = img // already there: nothing to upload
	} else if err != nil && !errors.Is(err, api.ErrNotFound) {
		return fmt.Errorf("push %s: %w", c.File, err)
	} else {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if res, err = client.PushImage(ctx, name, sum, st.Size(), f); err != nil {
			return fmt.Errorf("push %s: %w", c.File, err)
		}
	}
	if g.Output == "json" {
		return writeJSON(s, res)
	}
	verb := "pushed"
	if !res.Created {
		verb = "already on the control plane"
	}
	fmt.Fprintf(s.Out, "image %s %s (%s, sha256 %s)\n\n", res.Name, verb, humanBytes(res.Size), res.SHA256)
	fmt.Fprintf(s.Out, "Use it in a VirtualMachine (spec.image, spec.kernel, spec.kernel.initramfs or spec.firmware):\n\n")
	fmt.Fprintf(s.Out, "    url: %s\n    sha256: %s\n", res.URL, res.SHA256)
	return nil
}

// ImagesRmCmd removes an image.
type ImagesRmCmd struct {
	Digest string `arg:"" help:"The image's sha256 (as images list shows it; a unique prefix of 8 or more digits will do)."`
}

// Run removes.
func (c *ImagesRmCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	sum, err := c.resolve(ctx, client)
	if err != nil {
		return err
	}
	if err := client.DeleteImage(ctx, sum); err != nil {
		return fmt.Errorf("remove image %s: %w", sum, err)
	}
	fmt.Fprintf(s.Out, "image %s removed\n", sum)
	return nil
}

func (c *ImagesRmCmd) resolve(ctx context.Context, client *api.Client) (string, error) {
	want := strings.ToLower(strings.TrimPrefix(c.Digest, "sha256:"))
	if len(want) == 64 {
		return want, nil
	}
	if len(want) < 8 {
		return "", fmt.Errorf("image %q: give the sha256, or a prefix of at least 8 hex digits", c.Digest)
	}
	imgs, err := client.ListImages(ctx)
	if err != nil {
		return "", fmt.Errorf("list images: %w", err)
	}
	var found []string
	for _, img := range imgs {
		if strings.HasPrefix(img.SHA256, want) {
			found = append(found, img.SHA256)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no image of this tenant has a sha256 starting with %s", want)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%d images have a sha256 starting with %s: give more digits", len(found), want)
}

// humanBytes renders n in binary units ("1.5 GiB").
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
