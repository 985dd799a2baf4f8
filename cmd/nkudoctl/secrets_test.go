package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
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

// One ciphertext for several sites and team recipients: each site's key,
// each team identity (flag and file) decrypts it, an unrelated key does not;
// a site without a recipient among them fails naming that site.
func TestSecretsEncryptToSeveralSitesAndTeam(t *testing.T) {
	env, _, _ := siteEnv(t)
	var sites []*age.X25519Identity
	for _, name := range []string{"store-1", "store-2"} {
		ag := env.Enroll("acme", name)
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ag.Client.Heartbeat(t.Context(), api.HeartbeatRequest{Facts: api.HostFacts{Hostname: name, AgeRecipient: id.Recipient().String()}}); err != nil {
			t.Fatal(err)
		}
		sites = append(sites, id)
	}
	env.Enroll("acme", "store-3")
	teamFlag, _ := age.GenerateX25519Identity()
	teamFile, _ := age.GenerateX25519Identity()
	rf := filepath.Join(t.TempDir(), "team.txt")
	if err := os.WriteFile(rf, []byte("# recovery\n"+teamFile.Recipient().String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	const secret = "token: shared-very-secret\n"
	code, out, errs := nkudoctlIn(t, strings.NewReader(secret), "secrets", "encrypt", "--site", "store-1", "--site", "store-2",
		"--recipient", teamFlag.Recipient().String(), "--recipients-file", rf)
	if code != 0 {
		t.Fatalf("secrets encrypt = %d %q", code, errs)
	}
	for i, id := range []*age.X25519Identity{sites[0], sites[1], teamFlag, teamFile} {
		r, err := age.Decrypt(armor.NewReader(strings.NewReader(out)), id)
		if err != nil {
			t.Fatalf("identity %d cannot decrypt: %v", i, err)
		}
		if b, _ := io.ReadAll(r); string(b) != secret {
			t.Errorf("identity %d decrypted %q", i, b)
		}
	}
	other, _ := age.GenerateX25519Identity()
	if _, err := age.Decrypt(armor.NewReader(strings.NewReader(out)), other); err == nil {
		t.Error("an unrelated key decrypted the value")
	}

	code, out, errs = nkudoctlIn(t, strings.NewReader(secret), "secrets", "encrypt", "--site", "store-1", "--site", "store-3")
	if code == 0 || out != "" || !strings.Contains(errs, "store-3 has not reported an age recipient") {
		t.Errorf("encrypt with a site lacking a recipient = %d %q %q", code, out, errs)
	}
	code, _, errs = nkudoctlIn(t, strings.NewReader(secret), "secrets", "encrypt", "--site", "store-1", "--recipient", "age1nope")
	if code == 0 || !strings.Contains(errs, "--recipient") {
		t.Errorf("encrypt with a bad --recipient = %d %q", code, errs)
	}
}

// A value larger than the cap is refused by size before anything is
// fetched or encrypted, from stdin and from a file alike.
func TestSecretsEncryptRefusesLargeInput(t *testing.T) {
	big := bytes.Repeat([]byte("x"), maxSecretPlain+1)
	code, out, errs := nkudoctlIn(t, bytes.NewReader(big), "secrets", "encrypt", "--site", "store-1")
	if code == 0 || out != "" || !strings.Contains(errs, "larger than") {
		t.Fatalf("secrets encrypt of %d bytes from stdin = %d %q %q; want a size error", len(big), code, out, errs)
	}
	p := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(p, big, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs = nkudoctlIn(t, nil, "secrets", "encrypt", "--site", "store-1", "--file", p)
	if code == 0 || out != "" || !strings.Contains(errs, "larger than") {
		t.Fatalf("secrets encrypt --file of %d bytes = %d %q %q; want a size error", len(big), code, out, errs)
	}
}
