package imagecache

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// TestFetchVerifiesAndCaches: a download whose digest does not match
// leaves nothing in the cache; a matching one is kept under its digest and
// not downloaded again.
func TestFetchVerifiesAndCaches(t *testing.T) {
	body := []byte("n-kudo test image\n")
	sum := sha256.Sum256(body)
	good := hex.EncodeToString(sum[:])
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(body)
	}))
	defer srv.Close()
	c := &Cache{Dir: t.TempDir()}
	bad := strings.Repeat("0", 64)
	if _, err := c.Fetch(t.Context(), srv.URL+"/img?token=secret", bad); err == nil || !strings.Contains(err.Error(), "sha256 mismatch") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("mismatch: %v (want a mismatch error without the query)", err)
	}
	if entries, _ := os.ReadDir(c.Dir); len(entries) != 0 {
		t.Fatalf("a failed download left %d files", len(entries))
	}
	for range 2 {
		p, err := c.Fetch(t.Context(), srv.URL+"/img", "sha256:"+good)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != string(body) {
			t.Fatalf("cached file holds %q", b)
		}
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("%d downloads, want 2 (the mismatch and one good one)", n)
	}
}
