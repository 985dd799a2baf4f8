package store_test

import (
	"errors"
	"testing"

	"github.com/nkudo/nkudo/store"
)

func TestCheckCredentialUse(t *testing.T) {
	tok := store.Credential{Name: "t", Kind: store.CredentialToken, Host: "git.example.com"}
	pinned := store.Credential{Name: "p", Kind: store.CredentialToken, Host: "git.example.com:8443"}
	key := store.Credential{Name: "k", Kind: store.CredentialSSHKey, Host: "git.example.com"}
	tests := []struct {
		c         store.Credential
		url       string
		allowHTTP bool
		ok        bool
	}{
		{tok, "https://git.example.com/acme/fleet.git", false, true},
		{tok, "https://GIT.example.com:443/acme/fleet.git", false, true},
		{tok, "https://git.example.com.attacker.net/x.git", false, false},
		{tok, "https://attacker.net/git.example.com/x.git", false, false},
		{tok, "https://git.example.com@attacker.net/x.git", false, false},
		{tok, "http://git.example.com/acme/fleet.git", false, false},
		{tok, "http://git.example.com/acme/fleet.git", true, true},
		{tok, "git://git.example.com/acme/fleet.git", true, false},
		{tok, "file:///srv/git/fleet.git", true, false},
		{tok, "/srv/git/fleet.git", true, false},
		{tok, "ssh://git@git.example.com/acme/fleet.git", false, false}, // a token is not an ssh key
		{pinned, "https://git.example.com:8443/x.git", false, true},
		{pinned, "https://git.example.com/x.git", false, false},
		{key, "ssh://git@git.example.com:2222/acme/fleet.git", false, true},
		{key, "git@git.example.com:acme/fleet.git", false, true},
		{key, "git@attacker.net:acme/fleet.git", false, false},
		{key, "https://git.example.com/acme/fleet.git", false, false},
	}
	for _, tc := range tests {
		err := store.CheckCredentialUse(tc.c, tc.url, tc.allowHTTP)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, store.ErrCredentialUse)) {
			t.Errorf("CheckCredentialUse(%s bound to %s, %q, http=%v) = %v, want ok=%v", tc.c.Kind, tc.c.Host, tc.url, tc.allowHTTP, err, tc.ok)
		}
	}
}

func TestNormalizeCredentialHost(t *testing.T) {
	for in, want := range map[string]string{"Git.Example.com": "git.example.com", "h:8443": "h:8443", "[::1]:3000": "[::1]:3000", "127.0.0.1": "127.0.0.1"} {
		if got, err := store.NormalizeCredentialHost(in); err != nil || got != want {
			t.Errorf("NormalizeCredentialHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "https://h", "h/path", "user@h", "h?q", "h h"} {
		if _, err := store.NormalizeCredentialHost(in); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("NormalizeCredentialHost(%q) = %v, want ErrInvalid", in, err)
		}
	}
}
