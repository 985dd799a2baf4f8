package integration

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/backend"
)

// TestCredentialsAreTenantOwned: over real TLS, a tenant can reference only
// its own credentials, only for the host each is bound to, only over an
// encrypted transport; listing never shows a secret; every mutation is
// audited; and neither credentials nor webhook secrets reach the database
// file in plain text.
func TestCredentialsAreTenantOwned(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		env := cptest.Start(t, o)
		ctx := t.Context()
		alpha, bravo := env.NewTenant("alpha"), env.NewTenant("bravo")
		const bravoToken, alphaToken, hookSecret = "ghp_bravo-token-7c1d", "ghp_alpha-token-2b8e", "whsec-alpha-91af"
		if _, err := bravo.Client.PutCredential(ctx, "ci", api.PutCredentialRequest{Kind: api.CredentialToken, Host: "git.example.net", Secret: bravoToken}); err != nil {
			t.Fatal(err)
		}
		cred, err := alpha.Client.PutCredential(ctx, "own", api.PutCredentialRequest{Kind: api.CredentialToken, Host: "git.example.net", Secret: alphaToken})
		if err != nil {
			t.Fatal(err)
		}
		if cred.Fingerprint != store.CredentialFingerprint(alphaToken) || cred.Host != "git.example.net" {
			t.Errorf("PUT answer = %+v", cred)
		}

		// The list answer, raw, carries no secret.
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, env.URL+api.PathCredentials, nil)
		req.Header.Set("Authorization", "Bearer "+alpha.Token)
		resp, err := env.HTTPClient(nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"own"`) || strings.Contains(string(body), alphaToken) || strings.Contains(string(body), `"ci"`) {
			t.Errorf("GET /v1/credentials = %d %s", resp.StatusCode, body)
		}

		create := func(name, url, ref string, forge bool) error {
			r := api.CreateRepoRequest{Name: name, URL: url, WebhookSecret: hookSecret}
			if forge {
				r.ForgeKind, r.ForgeAPIURL, r.ForgeProject, r.ForgeCredentialsRef = "gitea", "https://git.example.net/api/v1", "alpha/fleet", ref
			} else {
				r.CredentialsRef = ref
			}
			_, err := alpha.Client.CreateRepo(ctx, r)
			return err
		}
		for _, tc := range []struct {
			name, url, ref, field string
			forge                 bool
		}{
			{"bravo's credential", "https://git.example.net/alpha/a.git", "ci", "credentialsRef", false},
			{"bravo's credential for statuses", "https://git.example.net/alpha/a.git", "ci", "forgeCredentialsRef", true},
			{"another host", "https://attacker.example.org/a.git", "own", "credentialsRef", false},
			{"plain http", "http://git.example.net/alpha/a.git", "own", "credentialsRef", false},
		} {
			err := create("r-"+strings.ReplaceAll(tc.name, " ", "-"), tc.url, tc.ref, tc.forge)
			if !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("create with %s: %v, want 400 naming %s", tc.name, err, tc.field)
			}
		}
		if err := create("fleet", "https://git.example.net/alpha/fleet.git", "own", false); err != nil {
			t.Fatalf("create with its own credential: %v", err)
		}
		repos, err := alpha.Client.ListRepos(ctx)
		if err != nil || len(repos) != 1 || repos[0].CredentialsRef != "own" {
			t.Fatalf("alpha's repositories: %+v, %v", repos, err)
		}
		ci := "ci"
		if _, err := alpha.Client.UpdateRepo(ctx, repos[0].ID, api.UpdateRepoRequest{CredentialsRef: &ci}); !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), "credentialsRef") {
			t.Errorf("update to bravo's credential: %v, want 400 naming credentialsRef", err)
		}
		if err := bravo.Client.DeleteCredential(ctx, "own"); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("bravo deletes alpha's credential: %v, want 404", err)
		}

		// Every mutation is an audit event without the secret.
		if err := alpha.Client.DeleteCredential(ctx, "own"); err != nil {
			t.Fatal(err)
		}
		evs, err := env.Store().ListAudit(ctx, "alpha", 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		actions := map[string]bool{}
		for _, e := range evs {
			actions[e.Action] = true
			if strings.Contains(string(e.Detail), alphaToken) || strings.Contains(string(e.Detail), hookSecret) {
				t.Errorf("audit event %s carries a secret", e.Action)
			}
		}
		if !actions["credential.create"] || !actions["credential.delete"] {
			t.Errorf("audit actions %v lack the credential changes", actions)
		}

		if env.DatabaseURL == "" {
			// The SQLite file and its WAL never hold a secret in plain text.
			path, err := backend.SQLitePath("", env.DataDir)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{path, path + "-wal"} {
				b, err := os.ReadFile(p)
				if err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
				for _, s := range []string{bravoToken, alphaToken, hookSecret} {
					if bytes.Contains(b, []byte(s)) {
						t.Errorf("%s contains %q in plain text", filepath.Base(p), s)
					}
				}
			}
		}
	})
}

// TestInsecureCredentialsOptIn: with the development opt-in, a credential
// may be used over plain http to the host it is bound to.
func TestInsecureCredentialsOptIn(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) { o.AllowInsecureCredentials = true }})
	ctx := t.Context()
	alpha := env.NewTenant("alpha")
	if _, err := alpha.Client.PutCredential(ctx, "local", api.PutCredentialRequest{Kind: api.CredentialToken, Host: "127.0.0.1", Secret: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := alpha.Client.CreateRepo(ctx, api.CreateRepoRequest{Name: "fleet", URL: "http://127.0.0.1:3000/alpha/fleet.git", WebhookSecret: "s", CredentialsRef: "local"}); err != nil {
		t.Errorf("http with the opt-in: %v", err)
	}
	if _, err := alpha.Client.CreateRepo(ctx, api.CreateRepoRequest{Name: "other", URL: "http://10.0.0.1/alpha/fleet.git", WebhookSecret: "s", CredentialsRef: "local"}); !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("another host with the opt-in: %v, want 400", err)
	}
}
