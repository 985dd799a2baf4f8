package commitsig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// TestSSHNamespaces: a key limited by allowed_signers to other namespaces
// does not verify commits, and a signature made for another namespace
// does not count either.
func TestSSHNamespaces(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	sign := func(ns string) *object.Commit {
		c := &object.Commit{
			Author:    object.Signature{Name: "A", Email: "a@example.com", When: time.Unix(1700000000, 0).UTC()},
			Committer: object.Signature{Name: "A", Email: "a@example.com", When: time.Unix(1700000000, 0).UTC()},
			Message:   "m\n", TreeHash: plumbing.NewHash("4b825dc642cb6eb9a060e54bf8d69288fbee4904"),
		}
		b, err := payload(c)
		if err != nil {
			t.Fatal(err)
		}
		s, err := sshsig.Sign(bytes.NewReader(b), signer, sshsig.HashSHA512, ns)
		if err != nil {
			t.Fatal(err)
		}
		c.PGPSignature = string(sshsig.Armor(s))
		return c
	}
	for _, tc := range []struct {
		name, line, ns string
		ok             bool
	}{
		{"any namespace", "a@example.com " + key, "git", true},
		{"git allowed", `a@example.com namespaces="file,git" ` + key, "git", true},
		{"git not allowed", `a@example.com namespaces="file" ` + key, "git", false},
		{"signed for files", "a@example.com " + key, "file", false},
	} {
		k, err := Parse(tc.line+"\n", "")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		s, err := k.Verify(sign(tc.ns))
		var uerr *UnverifiedError
		switch {
		case tc.ok && (err != nil || s.Key != ssh.FingerprintSHA256(signer.PublicKey())):
			t.Errorf("%s: signer %+v, %v; want verified", tc.name, s, err)
		case !tc.ok && !errors.As(err, &uerr):
			t.Errorf("%s: signer %+v, %v; want unverified", tc.name, s, err)
		}
	}
	if _, err := Parse("a@example.com valid-before=\"20300101\" "+key, ""); err == nil || !strings.Contains(err.Error(), "allowedSigners line 1") {
		t.Errorf("valid-before: %v, want refused naming the line", err)
	}
}
