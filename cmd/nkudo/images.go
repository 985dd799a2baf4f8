package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nkudo/nkudo/controlplane"
)

// ImageFlags tune the image store (`nkudoctl images push`), kept in
// <data-dir>/images.
type ImageFlags struct {
	MaxImageSize    string `help:"Largest image one push may upload (bytes, or with KiB, MiB, GiB, TiB); refused while it streams." default:"8GiB" env:"NKUDO_MAX_IMAGE_SIZE"`
	ImageQuota      string `help:"Total size of one tenant's images (bytes, or with KiB, MiB, GiB, TiB)." default:"64GiB" env:"NKUDO_IMAGE_QUOTA"`
	ImageGCGrace    string `help:"How long an image no manifest references is kept after it was pushed or last referenced (Go duration)." default:"24h" env:"NKUDO_IMAGE_GC_GRACE"`
	ImageGCInterval string `help:"How often unreferenced images are collected (Go duration; negative disables the collector)." default:"1h" env:"NKUDO_IMAGE_GC_INTERVAL"`
}

// apply sets the server's image options, with the store in dataDir.
func (f ImageFlags) apply(dataDir string, o *controlplane.Options) error {
	var err error
	o.ImageDir = filepath.Join(dataDir, "images")
	// Empty (ServeCmd built by code, as the demo does) keeps the server's defaults.
	if f.MaxImageSize != "" {
		if o.MaxImageBytes, err = parseBytes(f.MaxImageSize); err != nil {
			return fmt.Errorf("--max-image-size: %w", err)
		}
	}
	if f.ImageQuota != "" {
		if o.ImageQuotaBytes, err = parseBytes(f.ImageQuota); err != nil {
			return fmt.Errorf("--image-quota: %w", err)
		}
	}
	if o.ImageGCGrace, err = parseDuration(f.ImageGCGrace); err != nil {
		return fmt.Errorf("--image-gc-grace: %w", err)
	}
	if o.ImageGCGrace < 0 {
		return fmt.Errorf("--image-gc-grace %s: must not be negative", f.ImageGCGrace)
	}
	return nil
}

// startImageGC runs the image collector until ctx ends; the returned stop
// function ends it and waits, before the store is closed.
func (f ImageFlags) startImageGC(ctx context.Context, srv *controlplane.Server, log *slog.Logger) (stop func(), err error) {
	interval, err := parseDuration(f.ImageGCInterval)
	if err != nil {
		return nil, fmt.Errorf("--image-gc-interval: %w", err)
	}
	if interval < 0 {
		log.Info("image collector disabled", "component", "image-gc")
		return func() {}, nil
	}
	if interval == 0 {
		interval = time.Hour
	}
	host, _ := os.Hostname()
	holder := fmt.Sprintf("%s/%d", host, os.Getpid())
	gctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.RunImageGC(gctx, interval, holder)
	}()
	return func() { cancel(); <-done }, nil
}

// parseBytes reads "1048576", "512MiB", "8GiB" and the like.
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if v, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, optionally with KiB, MiB, GiB or TiB", s)
	}
	return n * mult, nil
}
