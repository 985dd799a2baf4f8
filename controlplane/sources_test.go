package controlplane_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
)

// TestCreateRepoLocalSources: a tenant cannot register a path on the
// server unless the operator allows local sources, and never the server's
// own data (another tenant's mirror), nor a git:// URL.
func TestCreateRepoLocalSources(t *testing.T) {
	outside := t.TempDir()
	for _, tc := range []struct {
		name  string
		allow bool
	}{{"off", false}, {"on", true}} {
		t.Run(tc.name, func(t *testing.T) {
			env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) { o.AllowLocalSources = tc.allow }})
			acme := env.NewTenant("acme")
			mirror := filepath.Join(env.DataDir, "git", "beta-fleet.git")
			if err := os.MkdirAll(mirror, 0o700); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(t.TempDir(), "mirror-link.git")
			if err := os.Symlink(mirror, link); err != nil {
				t.Fatal(err)
			}
			for i, c := range []struct {
				url string
				ok  bool
			}{
				{"https://git.example.net/fleet.git", true},
				{"git://git.example.net/fleet.git", false},
				{filepath.Join(outside, "fleet.git"), false}, // a plain path: file:// is the spelling
				{"file://" + filepath.Join(outside, "fleet.git"), tc.allow},
				{mirror, false},
				{"file://" + mirror, false},
				{"file://" + link, false},
				{"file://" + env.DataDir, false},
			} {
				_, err := acme.Client.CreateRepo(t.Context(), api.CreateRepoRequest{Name: "r" + string(rune('a'+i)), URL: c.url, WebhookSecret: "s3cret"})
				if c.ok && err != nil {
					t.Errorf("url %s: %v", c.url, err)
				}
				if !c.ok && (!errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), `"url"`)) {
					t.Errorf("url %s: err = %v, want a bad request naming the url field", c.url, err)
				}
			}
		})
	}
}
