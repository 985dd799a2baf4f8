package seed

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/nkudo/nkudo/model"
)

func encryptTo(t *testing.T, r age.Recipient, plain string) string {
	t.Helper()
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(plain)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// Encrypted user-data reaches the seed image in clear, read back with the
// real FAT tools; a value for another site's key, or no key, is refused
// with an error that names this site's recipient and quotes nothing else.
func TestNoCloudDecryptsUserData(t *testing.T) {
	const secret = "#cloud-config\npassword: hunter2-seed\n"
	site, _ := age.GenerateX25519Identity()
	other, _ := age.GenerateX25519Identity()
	spec := model.VMSpec{CPUs: 1, MemoryMiB: 512, CloudInit: &model.CloudInit{UserDataEncrypted: encryptTo(t, site.Recipient(), secret)}}

	img, err := NoCloud("pos-1", spec, site)
	if err != nil {
		t.Fatalf("NoCloud: %v", err)
	}
	if !bytes.Contains(img, []byte(secret)) {
		t.Error("the seed image does not hold the decrypted user-data")
	}
	if _, err := exec.LookPath("mtype"); err == nil {
		p := filepath.Join(t.TempDir(), "cidata.img")
		if err := os.WriteFile(p, img, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("mtype", "-i", p, "::user-data").Output()
		if err != nil || string(out) != secret {
			t.Errorf("mtype user-data = %q, %v", out, err)
		}
	}

	_, err = NoCloud("pos-1", spec, other)
	want := "user-data is not encrypted to this site's key (" + other.Recipient().String() + ")"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("wrong key: err = %v, want %q", err, want)
	}
	if _, err := NoCloud("pos-1", spec, nil); err == nil || !strings.Contains(err.Error(), "no site key") {
		t.Errorf("no key: err = %v", err)
	}
}
