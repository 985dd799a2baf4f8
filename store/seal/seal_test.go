package seal_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/store/seal"
)

func TestSealOpen(t *testing.T) {
	k, _, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s, err := k.Seal("hunter2", "credential", "acme", "ci")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s, "hunter2") || !seal.IsSealed(s) {
		t.Fatalf("sealed form %q", s)
	}
	got, err := k.Open(s, "credential", "acme", "ci")
	if err != nil || got != "hunter2" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// The additional data binds the value to its row: moved to another
	// tenant or name, it does not open.
	for _, ad := range [][]string{{"credential", "globex", "ci"}, {"credential", "acme", "ci2"}, {"credential", "acmeci"}} {
		if _, err := k.Open(s, ad...); !errors.Is(err, seal.ErrOpen) {
			t.Errorf("Open with %q: %v, want ErrOpen", ad, err)
		}
	}
	other, _, _ := seal.Generate()
	if _, err := other.Open(s, "credential", "acme", "ci"); !errors.Is(err, seal.ErrWrongKey) {
		t.Errorf("Open with another key: %v, want ErrWrongKey", err)
	}
	tampered := s[:len(s)-2] + "AA"
	if tampered == s {
		tampered = s[:len(s)-2] + "BB"
	}
	if _, err := k.Open(tampered, "credential", "acme", "ci"); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Open tampered: %v, want ErrOpen", err)
	}
	if e, _ := k.Seal(""); e != "" {
		t.Errorf("Seal(\"\") = %q", e)
	}
}

func TestKeyDoesNotPrint(t *testing.T) {
	k, enc, _ := seal.Generate()
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k)} {
		if strings.Contains(s, strings.TrimSpace(string(enc))) || !strings.Contains(s, k.ID()) {
			t.Errorf("printed key: %s", s)
		}
	}
}

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	k1, err := seal.LoadOrCreate("", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, seal.DefaultKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, err := seal.LoadOrCreate("", dir, nil)
	if err != nil || k2.ID() != k1.ID() {
		t.Fatalf("second load: %v, %v (want key %s)", k2, err, k1.ID())
	}
	k3, err := seal.LoadOrCreate(filepath.Join(dir, seal.DefaultKeyFile), "", nil)
	if err != nil || k3.ID() != k1.ID() {
		t.Fatalf("load by file: %v, %v", k3, err)
	}
	if _, err := seal.LoadOrCreate(filepath.Join(dir, "missing.key"), dir, nil); err == nil {
		t.Error("a configured key file that does not exist was accepted")
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := seal.Load(bad); err == nil || !strings.Contains(err.Error(), "32") {
		t.Errorf("short key: %v", err)
	}
}
