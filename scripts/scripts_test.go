// Package scripts_test checks the release and install scripts end to end:
// release.sh builds a real edge tarball from this tree, install-edge.sh
// installs it into a throw-away root twice (idempotent) and removes it again.
package scripts_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/controlplane/cptest"
)

const testVersion = "v0.0.0-scripttest"

// repoRoot is the repository root; go test runs in scripts/.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// run runs a command with a bounded environment and returns its combined output.
func run(t *testing.T, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := run(t, dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func TestShellcheck(t *testing.T) {
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Skip("SKIP: shellcheck is not installed (apt-get install shellcheck); scripts not linted")
	}
	scripts, err := filepath.Glob(filepath.Join(repoRoot(t), "scripts", "*.sh"))
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scripts found: %v", err)
	}
	// From another directory, to prove the source paths do not depend on the cwd.
	mustRun(t, t.TempDir(), nil, "shellcheck", append([]string{"-x"}, scripts...)...)
}

func TestSystemdUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("SKIP: systemd-analyze is not installed; units not verified")
	}
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"nkudo-edge.service", "nkudo.service"} {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		// verify insists that ExecStart's program exists on this machine.
		data = bytes.ReplaceAll(data, []byte("/usr/local/bin/nkudo-edge"), []byte("/bin/true"))
		data = bytes.ReplaceAll(data, []byte("/usr/local/bin/nkudo"), []byte("/bin/true"))
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
	}
	out := mustRun(t, dir, nil, "systemd-analyze", append([]string{"verify"}, units...)...)
	if strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify complained:\n%s", out)
	}
}

// release builds an edge-only release for the host architecture into a temp dir.
func release(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	// The identity is pinned so that two builds of the same tree compare equal
	// even when HEAD moves in between.
	mustRun(t, t.TempDir(), []string{"SOURCE_DATE_EPOCH=1764000000", "COMMIT=0123456789abcdef0123456789abcdef01234567"},
		filepath.Join(repoRoot(t), "scripts", "release.sh"), testVersion,
		"--edge-only", "--platforms", "linux/"+runtime.GOARCH, "--out", out)
	return out
}

func TestReleaseAndInstall(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SKIP: the edge release and installer are Linux-only")
	}
	if _, err := os.Stat(filepath.Join(repoRoot(t), "cmd", "nkudo-edge")); err != nil {
		t.Skip("SKIP: cmd/nkudo-edge does not exist in this tree yet; nothing to release")
	}
	rel := release(t)
	name := fmt.Sprintf("nkudo-edge_%s_linux_%s", testVersion, runtime.GOARCH)
	tarball := filepath.Join(rel, name+".tar.gz")

	t.Run("checksums", func(t *testing.T) {
		sums := readSums(t, filepath.Join(rel, "SHA256SUMS"))
		want := []string{name + ".tar.gz", "install-edge.sh"}
		got := sortedKeys(sums)
		slices.Sort(want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("SHA256SUMS lists (-want +got):\n%s", diff)
		}
		for file, sum := range sums {
			if got := fileSHA256(t, filepath.Join(rel, file)); got != sum {
				t.Errorf("%s: SHA256SUMS says %s, file is %s", file, sum, got)
			}
		}
	})

	files := readTarball(t, tarball)
	t.Run("tarball contents", func(t *testing.T) {
		want := map[string]int64{
			name + "/":                         0o755,
			name + "/README.md":                0o644,
			name + "/install-edge.sh":          0o755,
			name + "/nkudo-edge":               0o755,
			name + "/nkudo-edge.env.sample":    0o644,
			name + "/nkudo-edge.service":       0o644,
			name + "/nkudo-edge.sysusers.conf": 0o644,
			name + "/nkudo-edge.tmpfiles.conf": 0o644,
		}
		got := map[string]int64{}
		for n, f := range files {
			got[n] = f.mode
			if f.uid != 0 || f.gid != 0 {
				t.Errorf("%s is owned by %d:%d, want 0:0", n, f.uid, f.gid)
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("tarball entries and modes (-want +got):\n%s", diff)
		}
		unit, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "systemd", "nkudo-edge.service"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(files[name+"/nkudo-edge.service"].data, unit) {
			t.Error("the unit in the tarball differs from deploy/systemd/nkudo-edge.service")
		}
		if !bytes.Contains(files[name+"/README.md"].data, []byte(testVersion)) {
			t.Errorf("README.md does not name version %s", testVersion)
		}
	})

	binPath := filepath.Join(t.TempDir(), "nkudo-edge")
	if err := os.WriteFile(binPath, files[name+"/nkudo-edge"].data, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Run("static stamped binary", func(t *testing.T) {
		f, err := elf.Open(binPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("nkudo-edge has an ELF interpreter: it is dynamically linked")
			}
		}
		bi, err := buildinfo.ReadFile(binPath)
		if err != nil {
			t.Fatal(err)
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
			t.Errorf("build settings CGO_ENABLED=%q -trimpath=%q, want 0 and true", settings["CGO_ENABLED"], settings["-trimpath"])
		}
		out := mustRun(t, t.TempDir(), nil, binPath, "version")
		for _, want := range []string{testVersion, "commit 0123456789ab", "built 2025-11-24T16:00:00Z"} {
			if !strings.Contains(out, want) {
				t.Errorf("nkudo-edge version printed %q, want it to contain %q (stamped via internal/version)", out, want)
			}
		}
	})

	t.Run("unit flags exist", func(t *testing.T) {
		// The unit's ExecStart must use flags that `nkudo-edge run` really has.
		help, _ := run(t, t.TempDir(), nil, binPath, "run", "--help")
		for _, flag := range []string{"--control-plane", "--state-dir", "--pki-dir"} {
			if !strings.Contains(help, flag) {
				t.Errorf("nkudo-edge run --help does not list %s, which the unit passes:\n%s", flag, help)
			}
		}
	})

	t.Run("reproducible", func(t *testing.T) {
		again := release(t)
		if a, b := fileSHA256(t, tarball), fileSHA256(t, filepath.Join(again, name+".tar.gz")); a != b {
			t.Errorf("two releases of the same commit differ: %s vs %s", a, b)
		}
	})

	t.Run("install twice and uninstall", func(t *testing.T) {
		installer := filepath.Join(rel, "install-edge.sh")
		root := t.TempDir()
		srv := httptest.NewServer(http.FileServer(http.Dir(rel)))
		t.Cleanup(srv.Close)

		// First install from a URL (checksum fetched and verified), with the control plane.
		out := mustRun(t, t.TempDir(), nil, installer, "--root", root, "--no-systemd",
			"--tarball", srv.URL+"/"+name+".tar.gz", "--control-plane", "https://cp.example.test:8443")
		if !strings.Contains(out, "checksum of "+name+".tar.gz verified") {
			t.Errorf("install from URL did not verify the checksum:\n%s", out)
		}
		envFile := filepath.Join(root, "etc/nkudo-edge/nkudo-edge.env")
		env, err := os.ReadFile(envFile)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(env), "\nNKUDO_CONTROL_PLANE=https://cp.example.test:8443\n") {
			t.Errorf("config does not carry the control plane:\n%s", env)
		}
		wantTree := map[string]string{
			"etc/":                                  "d755",
			"etc/nkudo-edge/":                       "d755",
			"etc/nkudo-edge/nkudo-edge.env":         "-600",
			"etc/systemd/":                          "d755",
			"etc/systemd/system/":                   "d755",
			"etc/systemd/system/nkudo-edge.service": "-644",
			"usr/":                                  "d755",
			"usr/lib/":                              "d755",
			"usr/lib/sysusers.d/":                   "d755",
			"usr/lib/sysusers.d/nkudo-edge.conf":    "-644",
			"usr/lib/tmpfiles.d/":                   "d755",
			"usr/lib/tmpfiles.d/nkudo-edge.conf":    "-644",
			"usr/local/":                            "d755",
			"usr/local/bin/":                        "d755",
			"usr/local/bin/nkudo-edge":              "-755",
			"var/":                                  "d755",
			"var/lib/":                              "d755",
			"var/lib/nkudo-edge/":                   "d750",
			"var/lib/nkudo-edge/pki/":               "d700",
		}
		if diff := cmp.Diff(wantTree, modes(snapshot(t, root))); diff != "" {
			t.Errorf("installed tree (-want +got):\n%s", diff)
		}

		// A local edit and agent state must survive a reinstall; nothing else may change.
		if err := os.WriteFile(envFile, append(env, "# local edit\n"...), 0o600); err != nil {
			t.Fatal(err)
		}
		state := filepath.Join(root, "var/lib/nkudo-edge/results.db")
		if err := os.WriteFile(state, []byte("state"), 0o600); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, root)
		mustRun(t, t.TempDir(), nil, installer, "--root", root, "--no-systemd", "--tarball", tarball)
		if diff := cmp.Diff(before, snapshot(t, root)); diff != "" {
			t.Errorf("second install changed the tree (-first +second):\n%s", diff)
		}

		// A tarball that does not match its SHA256SUMS is refused before anything is touched.
		bad := t.TempDir()
		data, err := os.ReadFile(tarball)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bad, name+".tar.gz"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bad, "SHA256SUMS"), []byte(strings.Repeat("0", 64)+"  "+name+".tar.gz\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		badRoot := t.TempDir()
		out, err = run(t, t.TempDir(), nil, installer, "--root", badRoot, "--no-systemd", "--tarball", filepath.Join(bad, name+".tar.gz"))
		if err == nil || !strings.Contains(out, "checksum mismatch") {
			t.Errorf("tampered tarball: err=%v, want a checksum mismatch:\n%s", err, out)
		}
		if got := snapshot(t, badRoot); len(got) != 0 {
			t.Errorf("tampered tarball still installed files: %v", sortedKeys(got))
		}

		// Bad arguments name the flag.
		out, err = run(t, t.TempDir(), nil, installer, "--root", badRoot, "--no-systemd", "--tarball", tarball, "--ca-hash", "md5:abc")
		if err == nil || !strings.Contains(out, "--ca-hash must be sha256:") {
			t.Errorf("bad --ca-hash: err=%v, output:\n%s", err, out)
		}

		// Uninstall keeps configuration and state; --purge removes them.
		mustRun(t, t.TempDir(), nil, installer, "--root", root, "--no-systemd", "--uninstall")
		got := snapshot(t, root)
		for _, gone := range []string{"usr/local/bin/nkudo-edge", "etc/systemd/system/nkudo-edge.service", "usr/lib/sysusers.d/nkudo-edge.conf"} {
			if _, ok := got[gone]; ok {
				t.Errorf("uninstall left %s", gone)
			}
		}
		for _, kept := range []string{"etc/nkudo-edge/nkudo-edge.env", "var/lib/nkudo-edge/pki/", "var/lib/nkudo-edge/results.db"} {
			if _, ok := got[kept]; !ok {
				t.Errorf("uninstall without --purge removed %s", kept)
			}
		}
		mustRun(t, t.TempDir(), nil, installer, "--root", root, "--no-systemd", "--uninstall", "--purge")
		for p := range snapshot(t, root) {
			if strings.Contains(p, "nkudo") {
				t.Errorf("uninstall --purge left %s", p)
			}
		}
	})

	t.Run("install from the unpacked tarball", func(t *testing.T) {
		dir := t.TempDir()
		for n, f := range files {
			p := filepath.Join(dir, filepath.FromSlash(n))
			if strings.HasSuffix(n, "/") {
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, f.data, os.FileMode(f.mode)); err != nil {
				t.Fatal(err)
			}
		}
		root := t.TempDir()
		mustRun(t, t.TempDir(), nil, filepath.Join(dir, name, "install-edge.sh"), "--root", root, "--no-systemd")
		got, err := os.ReadFile(filepath.Join(root, "usr/local/bin/nkudo-edge"))
		if err != nil || !bytes.Equal(got, files[name+"/nkudo-edge"].data) {
			t.Errorf("the installed binary is not the one next to the installer (err %v)", err)
		}
	})

	t.Run("enroll against a real control plane", func(t *testing.T) {
		installer := filepath.Join(rel, "install-edge.sh")
		env := cptest.Start(t, cptest.Options{})
		env.NewTenant("acme")
		env.NewSite("acme", "store-042")
		root := t.TempDir()
		install := func(extra ...string) (string, error) {
			args := append([]string{"--root", root, "--no-systemd", "--tarball", tarball}, extra...)
			return run(t, t.TempDir(), nil, installer, args...)
		}
		cert := filepath.Join(root, "var/lib/nkudo-edge/pki/agent.crt")
		readCert := func() []byte {
			t.Helper()
			b, err := os.ReadFile(cert)
			if err != nil {
				t.Fatalf("agent certificate: %v", err)
			}
			return b
		}

		tok := env.EnrollmentToken("acme", "store-042")
		out, err := install("--control-plane", env.URL, "--token", tok.Token, "--ca-hash", tok.CAFingerprint)
		if err != nil || !strings.Contains(out, "enrolled as acme/store-042") {
			t.Fatalf("install with a token: err=%v\n%s", err, out)
		}
		first := readCert()

		// Already enrolled: a second run with a token keeps the identity.
		out, err = install("--token", tok.Token, "--ca-hash", tok.CAFingerprint)
		if err != nil || !strings.Contains(out, "already enrolled") {
			t.Errorf("reinstall of an enrolled host: err=%v\n%s", err, out)
		}
		if !bytes.Equal(first, readCert()) {
			t.Error("reinstall replaced the agent certificate")
		}

		// A failed re-enrollment (the token is used up) keeps the old identity.
		out, err = install("--reenroll", "--token", tok.Token, "--ca-hash", tok.CAFingerprint)
		if err == nil || !strings.Contains(out, "enrollment failed") || !strings.Contains(out, "restored the previous enrollment") {
			t.Errorf("re-enroll with a used token: err=%v, want a failure that restores the enrollment\n%s", err, out)
		}
		if !bytes.Equal(first, readCert()) {
			t.Error("a failed re-enrollment lost the agent certificate")
		}

		// A wrong CA pin is refused.
		fresh := env.EnrollmentToken("acme", "store-042")
		wrongPin := "sha256:" + strings.Repeat("ab", 32)
		out, err = install("--reenroll", "--token", fresh.Token, "--ca-hash", wrongPin)
		if err == nil || !bytes.Equal(first, readCert()) {
			t.Errorf("re-enroll with a wrong CA pin: err=%v, certificate kept=%v\n%s", err, bytes.Equal(first, readCert()), out)
		}

		// Re-enrolling with a fresh token replaces the identity and keeps the old one aside.
		fresh = env.EnrollmentToken("acme", "store-042")
		out, err = install("--reenroll", "--token", fresh.Token, "--ca-hash", fresh.CAFingerprint)
		if err != nil {
			t.Fatalf("re-enroll with a fresh token: %v\n%s", err, out)
		}
		if bytes.Equal(first, readCert()) {
			t.Error("re-enrollment kept the old certificate")
		}
		if aside, _ := filepath.Glob(filepath.Join(root, "var/lib/nkudo-edge/pki.before-reenroll.*", "agent.crt")); len(aside) != 1 {
			t.Errorf("the previous enrollment was not kept aside: %v", aside)
		}
	})
}

type tarFile struct {
	mode     int64
	uid, gid int
	data     []byte
}

func readTarball(t *testing.T, path string) map[string]tarFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tr := tar.NewReader(zr)
	files := map[string]tarFile{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = tarFile{mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid, data: data}
	}
}

func readSums(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		sum, file, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("%s:%d: not a sha256sum line: %q", path, line, sc.Text())
		}
		sums[file] = sum
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sums
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// snapshot maps every path under root (dirs with a trailing slash) to its
// type, permissions and, for files, content hash.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		perm := fmt.Sprintf("%o", info.Mode().Perm())
		if d.IsDir() {
			tree[rel+"/"] = "d" + perm
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		tree[rel] = "-" + perm + " " + hex.EncodeToString(sum[:8])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// modes drops the content hashes of a snapshot.
func modes(tree map[string]string) map[string]string {
	out := map[string]string{}
	for p, v := range tree {
		out[p], _, _ = strings.Cut(v, " ")
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
