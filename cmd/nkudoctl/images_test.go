package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/api"
)

func TestImages(t *testing.T) {
	env, _, _ := siteEnv(t)
	dir := t.TempDir()
	kernel := bytes.Repeat([]byte("kernel "), 3000)
	file := filepath.Join(dir, "vmlinuz-6.1")
	if err := os.WriteFile(file, kernel, 0o600); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(kernel)
	sum := hex.EncodeToString(s[:])
	url := env.URL + "/v1/agent/images/sha256/" + sum

	code, out, errs := nkudoctlIn(t, nil, "images", "push", file)
	if code != exitOK || !strings.Contains(out, "image vmlinuz-6.1 pushed (20.5 KiB, sha256 "+sum+")") ||
		!strings.Contains(out, "    url: "+url+"\n    sha256: "+sum+"\n") {
		t.Fatalf("push: exit %d\n%s%s", code, out, errs)
	}
	// Pushing again uploads nothing and prints the same snippet.
	code, out, _ = nkudoctlIn(t, nil, "images", "push", file, "--name", "other")
	if code != exitOK || !strings.Contains(out, "already on the control plane") || !strings.Contains(out, "url: "+url) {
		t.Fatalf("second push: exit %d\n%s", code, out)
	}
	other := filepath.Join(dir, "initrd.img")
	if err := os.WriteFile(other, []byte("initramfs"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = nkudoctlIn(t, nil, "-o", "json", "images", "push", other)
	var pushed api.PushImageResponse
	if err := json.Unmarshal([]byte(out), &pushed); code != exitOK || err != nil || !pushed.Created || pushed.Name != "initrd.img" {
		t.Fatalf("push -o json: exit %d, %v: %s", code, err, out)
	}

	code, out, _ = nkudoctlIn(t, nil, "images")
	if code != exitOK || !strings.Contains(out, "vmlinuz-6.1") || !strings.Contains(out, sum) || !strings.Contains(out, "never") {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	code, out, _ = nkudoctlIn(t, nil, "-o", "json", "images", "list")
	var list []api.Image
	if err := json.Unmarshal([]byte(out), &list); code != exitOK || err != nil || len(list) != 2 {
		t.Fatalf("list -o json: exit %d, %v: %s", code, err, out)
	}

	// rm by a unique prefix; a too-short or unknown one is refused clearly.
	code, _, errs = nkudoctlIn(t, nil, "images", "rm", "abc")
	if code == exitOK || !strings.Contains(errs, "at least 8 hex digits") {
		t.Errorf("rm with a short prefix: exit %d: %s", code, errs)
	}
	code, _, errs = nkudoctlIn(t, nil, "images", "rm", "00000000")
	if code == exitOK || !strings.Contains(errs, "no image of this tenant") {
		t.Errorf("rm with an unknown prefix: exit %d: %s", code, errs)
	}
	code, out, errs = nkudoctlIn(t, nil, "images", "rm", sum[:10])
	if code != exitOK || !strings.Contains(out, "image "+sum+" removed") {
		t.Fatalf("rm: exit %d\n%s%s", code, out, errs)
	}
	if imgs, _ := env.Store().ListImages(t.Context(), "acme"); len(imgs) != 1 || imgs[0].Name != "initrd.img" {
		t.Errorf("images after rm: %+v", imgs)
	}
}
