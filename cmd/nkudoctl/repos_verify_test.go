package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/nkudo/nkudo/api"
)

// TestReposSetVerify sets, shows and turns off a repository's commit
// signature policy with repos set --verify-*, against a real control plane.
func TestReposSetVerify(t *testing.T) {
	_, acme, _ := siteEnv(t)
	ctx := t.Context()
	if code, out, errs := nkudoctl(t, "repos", "add", "https://github.com/acme/fleet.git"); code != exitOK {
		t.Fatalf("repos add: exit %d\n%s%s", code, out, errs)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	signers := "alice@example.com " + string(ssh.MarshalAuthorizedKey(sk))
	file := filepath.Join(dir, "allowed_signers")
	bad := filepath.Join(dir, "bad")
	for p, text := range map[string]string{file: signers, bad: "alice@example.com ssh-ed25519 !!!\n"} {
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	code, out, errs := nkudoctl(t, "repos", "set", "fleet", "--verify-ssh", file, "--verify-mode", "all")
	if code != exitOK || !strings.Contains(out, "Verify commits:     all (1 SSH)") {
		t.Fatalf("repos set --verify-ssh: exit %d\n%s%s", code, out, errs)
	}
	repos, err := acme.Client.ListRepos(ctx)
	if err != nil || len(repos) != 1 {
		t.Fatalf("list repos: %v %v", repos, err)
	}
	id := repos[0].ID
	got, _ := acme.Client.GetRepo(ctx, id)
	if want := (api.VerifyPolicy{Mode: api.VerifyAll, AllowedSigners: signers}); got.Verify == nil || *got.Verify != want {
		t.Fatalf("stored policy %+v, want %+v", got.Verify, want)
	}
	// Changing the mode keeps the keys.
	if code, _, errs := nkudoctl(t, "repos", "set", "fleet", "--verify-mode", "head"); code != exitOK {
		t.Fatalf("repos set --verify-mode head: exit %d: %s", code, errs)
	}
	if got, _ := acme.Client.GetRepo(ctx, id); got.Verify == nil || got.Verify.Mode != api.VerifyHead || got.Verify.AllowedSigners != signers {
		t.Errorf("after --verify-mode head: %+v", got.Verify)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad mode", []string{"repos", "set", "fleet", "--verify-mode", "sometimes"}, "--verify-mode"},
		{"missing file", []string{"repos", "set", "fleet", "--verify-gpg", filepath.Join(dir, "none")}, "--verify-gpg"},
		{"bad key", []string{"repos", "set", "fleet", "--verify-ssh", bad}, "verify.allowedSigners line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := nkudoctl(t, tc.args...)
			if code == exitOK || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d: %s (want %q)", code, errs, tc.want)
			}
		})
	}

	code, out, errs = nkudoctl(t, "repos", "set", "fleet", "--verify-mode", "off")
	if code != exitOK || !strings.Contains(out, "Verify commits:     no") {
		t.Fatalf("repos set --verify-mode off: exit %d\n%s%s", code, out, errs)
	}
	if got, _ := acme.Client.GetRepo(ctx, id); got.Verify != nil {
		t.Errorf("after --verify-mode off: %+v", got.Verify)
	}
}
