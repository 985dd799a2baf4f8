package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/api"
)

func TestCredentials(t *testing.T) {
	env, _, _ := siteEnv(t)
	const secret = "ghp_cli-secret-0f9e"
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("  "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var outputs []string
	ctl := func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		var in io.Reader
		if stdin != "" {
			in = strings.NewReader(stdin)
		}
		code, out, errs := nkudoctlIn(t, in, args...)
		outputs = append(outputs, out, errs)
		return code, out, errs
	}

	code, out, errs := ctl("", "credentials", "set", "github-ci", "--from-file", file, "--host", "github.com")
	if code != exitOK || !strings.Contains(out, "credential github-ci stored (token, host github.com, sha256:") {
		t.Fatalf("set --from-file: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = ctl("bot:"+secret+"\n", "credentials", "set", "mirror", "--kind", "basic", "--from-file", "-", "--host", "git.example.com:8443")
	if code != exitOK {
		t.Fatalf("set from stdin: exit %d\n%s%s", code, out, errs)
	}
	_, sec, err := env.Store().CredentialSecret(t.Context(), "acme", "mirror")
	if err != nil || sec.Reveal() != "bot:"+secret {
		t.Errorf("stored secret from stdin: %v", err)
	}

	code, out, errs = ctl("", "credentials", "list")
	if code != exitOK || !strings.Contains(out, "github-ci") || !strings.Contains(out, "git.example.com:8443") {
		t.Fatalf("list: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = ctl("", "-o", "json", "credentials")
	var list []api.Credential
	if err := json.Unmarshal([]byte(out), &list); code != exitOK || err != nil || len(list) != 2 || list[0].Fingerprint == "" {
		t.Fatalf("list -o json: exit %d, %v: %s", code, err, out)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no host", []string{"credentials", "set", "x", "--from-file", file}, "--host"},
		{"ssh key without known_hosts", []string{"credentials", "set", "x", "--kind", "ssh-key", "--from-file", file, "--host", "h"}, "--known-hosts is required"},
		{"empty stdin", []string{"credentials", "set", "x", "--from-file", "-", "--host", "h"}, "no standard input"},
		{"bad name", []string{"credentials", "set", "a..b/c", "--from-file", file, "--host", "h"}, "name"},
		{"host with a scheme", []string{"credentials", "set", "x", "--from-file", file, "--host", "https://h/"}, "host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := ctl("", tc.args...)
			if code == exitOK || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d: %s (want %q)", code, errs, tc.want)
			}
		})
	}

	if code, out, errs := ctl("", "credentials", "rm", "mirror"); code != exitOK || !strings.Contains(out, "removed") {
		t.Fatalf("rm: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := ctl("", "credentials", "rm", "mirror"); code == exitOK || !strings.Contains(errs, "not found") {
		t.Errorf("rm twice: exit %d: %s", code, errs)
	}
	for _, o := range outputs {
		if strings.Contains(o, secret) {
			t.Fatalf("nkudoctl printed the secret: %s", o)
		}
	}
}
