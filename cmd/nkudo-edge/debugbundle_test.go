package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/agent/debugbundle"
	"github.com/nkudo/nkudo/api"
)

// untar returns the files of a gzipped tarball by their path below its
// top directory.
func untar(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("not a tarball: %v", err)
		}
		b, _ := io.ReadAll(tr)
		_, rel, _ := strings.Cut(h.Name, "/")
		files[rel] = b
	}
}

func TestDebugBundle(t *testing.T) {
	const setupKey, token = "SETUP-KEY-0123456789abcdef", "nket_token_in_the_environment"
	t.Setenv("NKUDO_ENROLL_TOKEN", token)
	state := t.TempDir()
	pki := filepath.Join(state, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	ident := `{"tenant":"acme","site":"store-042","controlPlane":"https://cp","netbird":{"setupKey":"` + setupKey + `"}}`
	for name, data := range map[string][]byte{"agent.key": keyPEM, "identity.json": []byte(ident)} {
		if err := os.WriteFile(filepath.Join(pki, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{"debug-bundle", "--state-dir", state, "--pki-dir", pki, "--hypervisor", "/nonexistent/cloud-hypervisor", "--netbird", "/nonexistent/netbird", "--journal-unit="}

	check := func(t *testing.T, data []byte) {
		t.Helper()
		files := untar(t, data)
		for _, want := range []string{"manifest.json", "version.json", "facts.json", "pki/identity.json", "pki/files.json", "state-files.json"} {
			if _, ok := files[want]; !ok {
				t.Errorf("%s missing from the bundle", want)
			}
		}
		for name, b := range files {
			for what, secret := range map[string][]byte{"setup key": []byte(setupKey), "token": []byte(token), "key": keyPEM, "key marker": []byte("PRIVATE KEY")} {
				if bytes.Contains(b, secret) {
					t.Errorf("%s contains the %s", name, what)
				}
			}
		}
		var facts api.HeartbeatRequest
		if err := json.Unmarshal(files["facts.json"], &facts); err != nil || facts.Facts.CPUs == 0 || facts.Facts.Hypervisor.Error == "" || facts.VMs == nil {
			t.Errorf("facts.json = %s (%v)", files["facts.json"], err)
		}
		var m debugbundle.Manifest
		if err := json.Unmarshal(files["manifest.json"], &m); err != nil || m.AgentVersion != version {
			t.Errorf("manifest.json = %s (%v)", files["manifest.json"], err)
		}
		// The bundle changes nothing: no provider dirs appear.
		if _, err := os.Stat(filepath.Join(state, "hypervisor")); !os.IsNotExist(err) {
			t.Errorf("the bundle created %s/hypervisor (stat: %v)", state, err)
		}
	}

	t.Run("output file", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "b.tar.gz")
		var stdout bytes.Buffer
		if code := run(t.Context(), append(base, "--output", out), &stdout, io.Discard); code != 0 {
			t.Fatalf("exit code %d", code)
		}
		if stdout.String() != out+"\n" {
			t.Errorf("printed %q, want the path %q", stdout.String(), out)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		check(t, data)
	})
	t.Run("default name in the working directory", func(t *testing.T) {
		dir := t.TempDir()
		t.Chdir(dir)
		var stdout bytes.Buffer
		if code := run(t.Context(), base, &stdout, io.Discard); code != 0 {
			t.Fatalf("exit code %d", code)
		}
		path := strings.TrimSpace(stdout.String())
		if filepath.Dir(path) != dir || !regexp.MustCompile(`^nkudo-edge-debug-.+-\d{8}T\d{6}Z\.tar\.gz$`).MatchString(filepath.Base(path)) {
			t.Fatalf("printed %q, want a default-named file in %s", path, dir)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		check(t, data)
	})
	t.Run("standard output", func(t *testing.T) {
		var stdout bytes.Buffer
		if code := run(t.Context(), append(base, "-o", "-"), &stdout, io.Discard); code != 0 {
			t.Fatalf("exit code %d", code)
		}
		check(t, stdout.Bytes())
	})
	t.Run("unwritable output", func(t *testing.T) {
		var stdout bytes.Buffer
		if code := run(t.Context(), append(base, "-o", filepath.Join(t.TempDir(), "no", "such", "dir", "b.tar.gz")), &stdout, io.Discard); code != 1 || stdout.Len() != 0 {
			t.Errorf("exit code %d, output %q; want 1 and nothing", code, stdout.String())
		}
	})
}

// TestDebugBundleQEMUProvider: with --provider qemu the bundle's facts
// name QEMU, and its provider dir is not created either.
func TestDebugBundleQEMUProvider(t *testing.T) {
	state := t.TempDir()
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	var stdout bytes.Buffer
	if code := run(t.Context(), []string{"debug-bundle", "--provider", "qemu", "--state-dir", state, "--pki-dir", filepath.Join(state, "pki"),
		"--netbird", "/nonexistent/netbird", "--journal-unit=", "--output", out}, &stdout, io.Discard); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var facts api.HeartbeatRequest
	if err := json.Unmarshal(untar(t, data)["facts.json"], &facts); err != nil || facts.Facts.Hypervisor.Name != "qemu" {
		t.Errorf("facts.json hypervisor = %+v (%v), want qemu", facts.Facts.Hypervisor, err)
	}
	if _, err := os.Stat(filepath.Join(state, "qemu")); !os.IsNotExist(err) {
		t.Errorf("the bundle created %s/qemu (stat: %v)", state, err)
	}
}
