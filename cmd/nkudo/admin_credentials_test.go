package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/store"
)

// TestAdminCredentialsImport: a file of the old shared credentials
// directory becomes one tenant's credential under the same name, bound to
// the host of the repositories that referenced it; another tenant's
// repository naming the same file gets nothing.
func TestAdminCredentialsImport(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	ctx := t.Context()
	env.NewTenant("acme")
	env.NewTenant("globex")
	st := env.Store()
	actor := store.Actor{Kind: store.ActorAdmin, ID: "test"}
	// Rows as an older release stored them: references to file names.
	for _, tn := range []string{"acme", "globex"} {
		if _, err := st.CreateRepository(ctx, actor, store.Repository{Tenant: tn, Name: "fleet", URL: "https://git.example.com/" + tn + "/fleet.git", CredentialsRef: "github-ci"}, "s"); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "github-ci")
	if err := os.WriteFile(file, []byte("ghp_imported-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, ctx, append([]string{"admin", "credentials", "import", "--tenant=acme", "--file=" + file}, storeArgs(env)...)...)
	if code != 0 {
		t.Fatalf("import: exit %d: %s %s", code, out, errOut)
	}
	if strings.Contains(out+errOut, "ghp_imported-token") {
		t.Errorf("import printed the secret: %s %s", out, errOut)
	}
	cred, sec, err := st.CredentialSecret(ctx, "acme", "github-ci")
	if err != nil {
		t.Fatal(err)
	}
	if sec.Reveal() != "ghp_imported-token" || cred.Kind != store.CredentialToken || cred.Host != "git.example.com" {
		t.Errorf("imported %+v with secret %q", cred, sec.Reveal())
	}
	if _, _, err := st.CredentialSecret(ctx, "globex", "github-ci"); err == nil {
		t.Error("the import for acme made the credential usable by globex")
	}

	// No repository to infer the host from: --host is required.
	other := filepath.Join(dir, "unused")
	if err := os.WriteFile(other, []byte("user:pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCmd(t, ctx, append([]string{"admin", "credentials", "import", "--tenant=acme", "--file=" + other}, storeArgs(env)...)...)
	if code == 0 || !strings.Contains(errOut, "--host") {
		t.Errorf("import without a host: exit %d: %s", code, errOut)
	}
	code, out, errOut = runCmd(t, ctx, append([]string{"admin", "credentials", "import", "--tenant=acme", "--file=" + other, "--host=git.example.com"}, storeArgs(env)...)...)
	if code != 0 || !strings.Contains(out, "basic") {
		t.Errorf("import with --host: exit %d: %s %s", code, out, errOut)
	}
}
