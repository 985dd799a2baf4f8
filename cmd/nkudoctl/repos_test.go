package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
)

// TestRepos drives repos add/list/show/set/reconcile/rm against a real
// control plane over TLS and checks what the store holds.
func TestRepos(t *testing.T) {
	env, acme, _ := siteEnv(t)
	ctx := t.Context()
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("ghp_repos-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"credentials", "set", "github-ci", "--from-file", tok, "--host", "github.com"},
		{"credentials", "set", "github-status", "--from-file", tok, "--host", "api.github.com"},
	} {
		if code, out, errs := nkudoctl(t, c...); code != exitOK {
			t.Fatalf("%v: exit %d\n%s%s", c, code, out, errs)
		}
	}

	code, out, errs := nkudoctl(t, "repos", "add", "https://github.com/acme/fleet.git", "--branch", "main", "--path", "manifests",
		"--credentials", "github-ci", "--forge", "github", "--forge-project", "acme/fleet", "--forge-credentials", "github-status")
	if code != exitOK {
		t.Fatalf("repos add: exit %d\n%s%s", code, out, errs)
	}
	m := regexp.MustCompile(`(?m)^ID: +(\S+)\nWebhook URL: +(\S+)\nWebhook secret: +([0-9a-f]{64})$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("repos add printed no ID, webhook URL and 64-hex-digit secret:\n%s", out)
	}
	id, hookURL, secret := m[1], m[2], m[3]
	if hookURL != env.URL+api.Path(api.PathWebhook, id) {
		t.Errorf("webhook URL %s, want %s", hookURL, env.URL+api.Path(api.PathWebhook, id))
	}
	for _, want := range []string{"GitHub: repository Settings > Webhooks", "Payload URL:   " + hookURL, "Content type:  application/json", "Secret:        " + secret, "Events:        Pushes, Pull requests"} {
		if !strings.Contains(out, want) {
			t.Errorf("repos add output lacks %q:\n%s", want, out)
		}
	}
	// The printed secret is the one deliveries are verified with.
	stored, err := env.Store().WebhookSecret(ctx, "acme", id)
	if err != nil || stored.Reveal() != secret {
		t.Fatalf("stored webhook secret differs from the printed one (%v)", err)
	}
	got, err := acme.Client.GetRepo(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "fleet" || got.Branch != "main" || got.Path != "manifests" || got.CredentialsRef != "github-ci" ||
		got.ForgeKind != "github" || got.ForgeProject != "acme/fleet" || got.ForgeCredentialsRef != "github-status" {
		t.Errorf("registered repository: %+v", got)
	}

	// A second one, as JSON, on another forge: a new secret each time, and
	// the form of that forge.
	code, out, errs = nkudoctl(t, "-o", "json", "repos", "add", "https://gitlab.example.com/ops/edge.git", "--name", "edge", "--forge", "gitlab", "--forge-project", "ops/edge")
	var added reposAdded
	if err := json.Unmarshal([]byte(out), &added); code != exitOK || err != nil {
		t.Fatalf("repos add -o json: exit %d, %v\n%s%s", code, err, out, errs)
	}
	if added.Repository.Name != "edge" || len(added.WebhookSecret) != 64 || added.WebhookSecret == secret ||
		added.Webhook.Secret != added.WebhookSecret || added.Webhook.PayloadURL != added.Repository.WebhookURL ||
		!strings.Contains(added.Webhook.Where, "GitLab") || !strings.Contains(strings.Join(added.Webhook.Events, ","), "Merge request events") {
		t.Errorf("repos add -o json: %+v", added)
	}

	// --forge notes is git notes: no forge form, the generic settings.
	code, out, errs = nkudoctl(t, "-o", "json", "repos", "add", "file://"+t.TempDir(), "--name", "local", "--forge", "notes")
	var notes reposAdded
	if err := json.Unmarshal([]byte(out), &notes); code != exitOK || err != nil {
		t.Fatalf("repos add --forge notes: exit %d, %v\n%s%s", code, err, out, errs)
	}
	if notes.Repository.ForgeKind != "gitnotes" || notes.Webhook.Forge != "" || !strings.Contains(notes.Webhook.Where, "any forge") {
		t.Errorf("repos add --forge notes: %+v", notes)
	}
	if code, out, errs := nkudoctl(t, "repos", "rm", notes.Repository.ID); code != exitOK {
		t.Fatalf("repos rm by ID: exit %d\n%s%s", code, out, errs)
	}

	code, out, errs = nkudoctl(t, "repos")
	if code != exitOK || !strings.Contains(out, id) || !strings.Contains(out, "edge") || !strings.Contains(out, "gitlab") {
		t.Fatalf("repos list: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = nkudoctl(t, "-o", "json", "repos", "list")
	var list []api.Repository
	if err := json.Unmarshal([]byte(out), &list); code != exitOK || err != nil || len(list) != 2 {
		t.Fatalf("repos list -o json: exit %d, %v: %s", code, err, out)
	}
	code, out, errs = nkudoctl(t, "repos", "show", "fleet")
	if code != exitOK || !strings.Contains(out, "Forge credentials:  github-status") || !strings.Contains(out, "Webhook secret:     set") {
		t.Fatalf("repos show: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = nkudoctl(t, "-o", "json", "repos", "show", id)
	var shown api.Repository
	if err := json.Unmarshal([]byte(out), &shown); code != exitOK || err != nil || shown.ID != id {
		t.Fatalf("repos show -o json: exit %d, %v: %s", code, err, out)
	}

	// set: suspend, move the path, drop the fetch credential; then rotate.
	code, out, errs = nkudoctl(t, "repos", "set", "fleet", "--suspend", "--path", "fleet", "--credentials", "")
	if code != exitOK || !strings.Contains(out, "State:              suspended") {
		t.Fatalf("repos set: exit %d\n%s%s", code, out, errs)
	}
	if got, _ := acme.Client.GetRepo(ctx, id); !got.Suspended || got.Path != "fleet" || got.CredentialsRef != "" || got.Branch != "main" {
		t.Errorf("after set: %+v", got)
	}
	code, out, errs = nkudoctl(t, "-o", "json", "repos", "set", id, "--resume", "--rotate-webhook-secret")
	var set reposSet
	if err := json.Unmarshal([]byte(out), &set); code != exitOK || err != nil || set.Repository.Suspended || len(set.WebhookSecret) != 64 || set.WebhookSecret == secret {
		t.Fatalf("repos set --rotate-webhook-secret: exit %d, %v\n%s%s", code, err, out, errs)
	}
	if stored, _ := env.Store().WebhookSecret(ctx, "acme", id); stored.Reveal() != set.WebhookSecret {
		t.Error("the rotated secret is not the stored one")
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown forge", []string{"repos", "add", "https://x.example/r.git", "--forge", "bitbucket"}, "--forge"},
		{"unknown credential", []string{"repos", "add", "https://github.com/acme/other.git", "--credentials", "nope"}, "credentialsRef"},
		{"bad URL", []string{"repos", "add", "not a url"}, "url"},
		{"nothing to set", []string{"repos", "set", "fleet"}, "nothing to change"},
		{"suspend and resume", []string{"repos", "set", "fleet", "--suspend", "--resume"}, "--suspend"},
		{"unknown repository", []string{"repos", "show", "nope"}, `no repository "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := nkudoctl(t, tc.args...)
			if code == exitOK || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d: %s (want %q)", code, errs, tc.want)
			}
		})
	}

	// reconcile without a reconciler wired: the server's answer is reported.
	if code, _, errs := nkudoctl(t, "repos", "reconcile", "fleet"); code == exitOK || errs == "" {
		t.Errorf("repos reconcile without a reconciler: exit %d: %s", code, errs)
	}

	if code, out, errs := nkudoctl(t, "repos", "rm", "edge"); code != exitOK || !strings.Contains(out, "removed") {
		t.Fatalf("repos rm: exit %d\n%s%s", code, out, errs)
	}
	if _, err := acme.Client.GetRepo(ctx, added.Repository.ID); err == nil {
		t.Error("repos rm left the repository")
	}
	if code, _, errs := nkudoctl(t, "repos", "rm", "edge"); code == exitOK || !strings.Contains(errs, "no repository") {
		t.Errorf("repos rm twice: exit %d: %s", code, errs)
	}
}

// TestReposLocalSourcePolicy: a control plane without --allow-local-sources
// refuses file:// URLs, and nkudoctl says why.
func TestReposLocalSourcePolicy(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) { o.AllowLocalSources = false }})
	acme := env.NewTenant("acme")
	t.Setenv("NKUDO_CONFIG", filepath.Join(t.TempDir(), "none.json"))
	t.Setenv("NKUDO_SERVER", env.URL)
	t.Setenv("NKUDO_TOKEN", acme.Token)
	t.Setenv("NKUDO_CA_HASH", env.CAFingerprint)
	t.Setenv("NKUDO_CA_FILE", "")
	for _, u := range []string{"file://" + t.TempDir(), "file:///srv/git/fleet"} {
		code, out, errs := nkudoctl(t, "repos", "add", u)
		if code != exitError || out != "" || !strings.Contains(errs, `field "url"`) || !strings.Contains(errs, "allow-local-sources") {
			t.Errorf("repos add %s: exit %d\nstdout %q\nstderr %q", u, code, out, errs)
		}
	}
	if repos, err := acme.Client.ListRepos(t.Context()); err != nil || len(repos) != 0 {
		t.Errorf("refused repositories were registered: %v %v", repos, err)
	}
}
