// Package imagecache owns the providers' shared cache of downloaded,
// sha256-verified images, kernels and firmware: one file per digest,
// written only when the digest matches.
package imagecache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var sha256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)

// SanitizeURL drops credentials and the query so a URL can be logged.
func SanitizeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable url>"
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return u.String()
}

// Cache is a directory of verified files named by their sha256.
type Cache struct {
	// Dir holds the files; it is created on the first download.
	Dir string
	// HTTP downloads http(s) URLs; nil means http.DefaultClient (the
	// caller's context bounds each download).
	HTTP *http.Client
	// ControlPlane is the control plane's URL; images on its origin
	// (pushed with nkudoctl images push) are fetched with ControlPlaneHTTP,
	// the agent's mTLS client, so a site needs no egress but the control
	// plane. "" = no such routing.
	ControlPlane string
	// ControlPlaneHTTP is the agent's client of the control plane (its
	// certificate and the pinned CA). nil = HTTP for every URL.
	ControlPlaneHTTP *http.Client
}

// client picks the HTTP client for u: the agent's mTLS client on the
// control plane's origin, HTTP (or the default client) elsewhere. The
// mTLS client is never used for another origin, so the agent's
// certificate is presented only to its control plane.
func (c *Cache) client(u *url.URL) *http.Client {
	if c.ControlPlaneHTTP != nil && c.ControlPlane != "" {
		if cp, err := url.Parse(c.ControlPlane); err == nil && origin(cp) == origin(u) {
			return c.ControlPlaneHTTP
		}
	}
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// origin is scheme://host:port with the scheme's default port made explicit.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[scheme]
	}
	return scheme + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// Fetch returns the path of the cached file with digest sum, downloading
// rawURL into the cache first if needed. The download is hashed as it is
// written and only renamed into place when the digest matches: a mismatch
// fails and keeps nothing.
func (c *Cache) Fetch(ctx context.Context, rawURL, sum string) (string, error) {
	sum = strings.ToLower(strings.TrimPrefix(sum, "sha256:"))
	if !sha256Re.MatchString(sum) {
		return "", fmt.Errorf("image %s: sha256 %q is not 64 hex digits", SanitizeURL(rawURL), sum)
	}
	dir := c.Dir
	final := filepath.Join(dir, sum)
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("image cache: %w", err)
	}
	src, err := c.open(ctx, rawURL)
	if err != nil {
		return "", err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(dir, ".download-*")
	if err != nil {
		return "", fmt.Errorf("image cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), src); err != nil {
		tmp.Close()
		return "", fmt.Errorf("download %s: %w", SanitizeURL(rawURL), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("image cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("image cache: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return "", fmt.Errorf("download %s: sha256 mismatch: got %s, want %s", SanitizeURL(rawURL), got, sum)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("image cache: %w", err)
	}
	return final, nil
}

func (c *Cache) open(ctx context.Context, rawURL string) (io.ReadCloser, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("image url %s: %w", SanitizeURL(rawURL), err)
	}
	switch u.Scheme {
	case "file":
		f, err := os.Open(u.Path)
		if err != nil {
			return nil, fmt.Errorf("open image: %w", err)
		}
		return f, nil
	case "http", "https":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
		if err != nil {
			return nil, fmt.Errorf("image url %s: %w", SanitizeURL(rawURL), err)
		}
		resp, err := c.client(u).Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // the url.Error would print the unsanitised URL
			}
			return nil, fmt.Errorf("download %s: %w", SanitizeURL(rawURL), err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("download %s: HTTP %s", SanitizeURL(rawURL), resp.Status)
		}
		return resp.Body, nil
	}
	return nil, fmt.Errorf("image url %s: scheme %q not supported (want file, http or https)", SanitizeURL(rawURL), u.Scheme)
}

// CopyFile copies src to dst through a temporary file and an fsync, so dst
// is either complete or absent.
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return nil
}
