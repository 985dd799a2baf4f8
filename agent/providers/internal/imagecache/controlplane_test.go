package imagecache_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/agent/providers/internal/imagecache"
	"github.com/nkudo/nkudo/controlplane/cptest"
)

// TestFetchFromControlPlane: an image pushed to the control plane is
// fetched over the agent's mTLS client and verified by its digest; a site
// of another tenant cannot fetch it, and the agent's client is not used
// for other origins.
func TestFetchFromControlPlane(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	env.NewTenant("globex")
	kernel := bytes.Repeat([]byte("kernel"), 4096)
	sum := sha256.Sum256(kernel)
	digest := hex.EncodeToString(sum[:])
	res, err := acme.Client.PushImage(t.Context(), "vmlinuz", digest, int64(len(kernel)), bytes.NewReader(kernel))
	if err != nil {
		t.Fatal(err)
	}

	own := env.Enroll("acme", "store-1")
	c := &imagecache.Cache{Dir: t.TempDir(), ControlPlane: env.URL, ControlPlaneHTTP: own.Client.HTTPClient()}
	p, err := c.Fetch(t.Context(), res.URL, digest)
	if err != nil {
		t.Fatalf("fetch over mTLS: %v", err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, kernel) {
		t.Error("cached bytes differ from the pushed image")
	}
	// The digest is still checked: a manifest naming the URL with another
	// digest fails and caches nothing.
	fresh := &imagecache.Cache{Dir: t.TempDir(), ControlPlane: env.URL, ControlPlaneHTTP: own.Client.HTTPClient()}
	if _, err := fresh.Fetch(t.Context(), res.URL, strings.Repeat("0", 64)); err == nil || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Errorf("fetch with a wrong digest: %v", err)
	}

	// Without the control-plane client the same URL is a plain HTTPS
	// download, which the control plane's private CA does not pass.
	plain := &imagecache.Cache{Dir: t.TempDir()}
	if _, err := plain.Fetch(t.Context(), res.URL, digest); err == nil {
		t.Error("fetched without the agent's client")
	}

	// A site of another tenant gets 404.
	other := env.Enroll("globex", "store-9")
	foreign := &imagecache.Cache{Dir: t.TempDir(), ControlPlane: env.URL, ControlPlaneHTTP: other.Client.HTTPClient()}
	if _, err := foreign.Fetch(t.Context(), res.URL, digest); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("another tenant's site fetched the image: %v", err)
	}

	// Other origins go through the ordinary client: only it trusts this
	// server, so the fetch succeeds only if the agent's client (and its
	// certificate) stayed out of it.
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(kernel) }))
	defer srv.Close()
	elsewhere := &imagecache.Cache{Dir: t.TempDir(), HTTP: srv.Client(), ControlPlane: env.URL, ControlPlaneHTTP: own.Client.HTTPClient()}
	if _, err := elsewhere.Fetch(t.Context(), srv.URL+"/vmlinuz", digest); err != nil {
		t.Fatalf("fetch from another origin: %v", err)
	}
}
