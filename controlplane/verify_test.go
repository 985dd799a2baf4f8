package controlplane_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
)

// TestRepoVerifyPolicy sets, shows and clears a repository's commit
// signature policy through PATCH /v1/repos/{repo}, and checks that a
// policy that could never verify is refused naming the field.
func TestRepoVerifyPolicy(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	ctx := t.Context()
	repo, err := acme.Client.CreateRepo(ctx, api.CreateRepoRequest{Name: "r", URL: "https://git.example.net/r.git", WebhookSecret: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if repo.Verify != nil {
		t.Errorf("new repository has a policy: %+v", repo.Verify)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	signers := "alice@example.com namespaces=\"git\" " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sk))) + "\n"
	pol := api.VerifyPolicy{Mode: api.VerifyHead, AllowedSigners: signers}
	got, err := acme.Client.UpdateRepo(ctx, repo.ID, api.UpdateRepoRequest{Verify: &pol})
	if err != nil {
		t.Fatal(err)
	}
	if got.Verify == nil || *got.Verify != pol {
		t.Errorf("after PATCH: verify = %+v, want %+v", got.Verify, pol)
	}
	if shown, err := acme.Client.GetRepo(ctx, repo.ID); err != nil || shown.Verify == nil || *shown.Verify != pol {
		t.Errorf("GET: verify = %+v, %v", shown.Verify, err)
	}

	for _, c := range []struct {
		pol  api.VerifyPolicy
		want string
	}{
		{api.VerifyPolicy{Mode: "always", AllowedSigners: signers}, `"verify.mode"`},
		{api.VerifyPolicy{Mode: api.VerifyAll}, "needs allowedSigners or gpgKeys"},
		{api.VerifyPolicy{AllowedSigners: signers}, `"verify.mode" is required`},
		{api.VerifyPolicy{Mode: api.VerifyHead, AllowedSigners: "# ops\nalice@example.com ssh-ed25519 notbase64\n"}, "verify.allowedSigners line 2"},
		{api.VerifyPolicy{Mode: api.VerifyHead, AllowedSigners: "alice@example.com cert-authority " + strings.Fields(signers)[2] + " " + strings.Fields(signers)[3]}, "cert-authority"},
		{api.VerifyPolicy{Mode: api.VerifyHead, GPGKeys: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnope\n-----END PGP PUBLIC KEY BLOCK-----\n"}, "verify.gpgKeys"},
	} {
		_, err := acme.Client.UpdateRepo(ctx, repo.ID, api.UpdateRepoRequest{Verify: &c.pol})
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(err.Error(), c.want) {
			t.Errorf("PATCH verify %+v: err = %v, want 400 naming %s", c.pol, err, c.want)
		}
	}
	if shown, _ := acme.Client.GetRepo(ctx, repo.ID); shown.Verify == nil || *shown.Verify != pol {
		t.Errorf("a refused PATCH changed the policy: %+v", shown.Verify)
	}

	got, err = acme.Client.UpdateRepo(ctx, repo.ID, api.UpdateRepoRequest{Verify: &api.VerifyPolicy{}})
	if err != nil || got.Verify != nil {
		t.Errorf("turning verification off: verify = %+v, %v", got.Verify, err)
	}
}
