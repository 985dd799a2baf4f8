package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/nkudo/nkudo/api"
)

// sites show prints the recipient the agent reported; secrets encrypt
// produces armour that the site's identity decrypts and another does not,
// and the plaintext never reaches the control plane's log.
func TestSecretsEncryptToSiteRecipient(t *testing.T) {
	env, _, logs := siteEnv(t)
	ag := env.Enroll("acme", "store-1")
	env.Enroll("acme", "store-2")
	site, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ag.Client.Heartbeat(t.Context(), api.HeartbeatRequest{Facts: api.HostFacts{Hostname: "edge", AgeRecipient: site.Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := nkudoctlIn(t, nil, "sites", "show", "store-1")
	if code != 0 || !strings.Contains(out, site.Recipient().String()) {
		t.Fatalf("sites show = %d %q %q; want the recipient", code, out, errs)
	}

	const secret = "#cloud-config\npassword: hunter2-very-secret\n"
	code, out, errs = nkudoctlIn(t, strings.NewReader(secret), "secrets", "encrypt", "--site", "store-1")
	if code != 0 {
		t.Fatalf("secrets encrypt = %d %q", code, errs)
	}
	if !strings.HasPrefix(out, armor.Header+"\n") || !strings.HasSuffix(out, armor.Footer+"\n") || strings.Contains(out, "hunter2") {
		t.Fatalf("ciphertext is not age armour:\n%s", out)
	}
	r, err := age.Decrypt(armor.NewReader(strings.NewReader(out)), site)
	if err != nil {
		t.Fatalf("decrypt with the site's key: %v", err)
	}
	if b, _ := io.ReadAll(r); !bytes.Equal(b, []byte(secret)) {
		t.Errorf("decrypted %q", b)
	}
	other, _ := age.GenerateX25519Identity()
	if _, err := age.Decrypt(armor.NewReader(strings.NewReader(out)), other); err == nil {
		t.Error("another key decrypted the value")
	}
	if strings.Contains(logs.String(), "hunter2") {
		t.Error("the plaintext reached the control plane's log")
	}

	// A site whose agent never reported a recipient: a clear error.
	code, _, errs = nkudoctlIn(t, strings.NewReader(secret), "secrets", "encrypt", "--site", "store-2")
	if code == 0 || !strings.Contains(errs, "store-2 has not reported an age recipient") {
		t.Errorf("encrypt to a site without a recipient = %d %q", code, errs)
	}
}
