package seed

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
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

// Encrypted files land, decrypted, in a write_files document on the seed
// (read back with mtype when present); with user-data the seed is a MIME
// multi-part holding both; a file encrypted to another key fails naming
// the file and quoting none of it.
func TestNoCloudDecryptsFiles(t *testing.T) {
	const secret = "api-token-hunter2-file\n"
	site, _ := age.GenerateX25519Identity()
	other, _ := age.GenerateX25519Identity()
	files := []model.CloudInitFile{
		{Path: "/etc/motd", Content: "hello\n"},
		{Path: "/etc/app/token", Permissions: "0600", ContentEncrypted: encryptTo(t, site.Recipient(), secret)},
	}
	b64 := base64.StdEncoding.EncodeToString([]byte(secret))

	img, err := NoCloud("pos-1", model.VMSpec{CPUs: 1, MemoryMiB: 512, CloudInit: &model.CloudInit{Files: files}}, site)
	if err != nil {
		t.Fatalf("NoCloud: %v", err)
	}
	want := "#cloud-config\nmerge_how:\n  - name: list\n    settings: [append]\n  - name: dict\n    settings: [no_replace, recurse_list]\nwrite_files:\n" +
		"  - path: \"/etc/motd\"\n    encoding: b64\n    content: aGVsbG8K\n" +
		"  - path: \"/etc/app/token\"\n    encoding: b64\n    content: " + b64 + "\n    permissions: \"0600\"\n"
	if !bytes.Contains(img, []byte(want)) {
		t.Errorf("the seed image does not hold the write_files document:\n%s", want)
	}
	if _, err := exec.LookPath("mtype"); err == nil {
		p := filepath.Join(t.TempDir(), "cidata.img")
		if err := os.WriteFile(p, img, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("mtype", "-i", p, "::user-data").Output()
		if err != nil || string(out) != want {
			t.Errorf("mtype user-data = %q, %v", out, err)
		}
	}

	// With user-data of its own: a multi-part with both documents.
	const user = "#cloud-config\nhostname: pos-1\n"
	img, err = NoCloud("pos-1", model.VMSpec{CPUs: 1, MemoryMiB: 512, CloudInit: &model.CloudInit{UserData: user, Files: files}}, site)
	if err != nil {
		t.Fatalf("NoCloud: %v", err)
	}
	parts := userDataParts(t, img)
	if len(parts) != 2 || parts[0] != user || parts[1] != want {
		t.Errorf("multi-part user-data = %q", parts)
	}

	for name, key := range map[string]*age.X25519Identity{"another site's key": other, "no key": nil} {
		_, err := NoCloud("pos-1", model.VMSpec{CPUs: 1, MemoryMiB: 512, CloudInit: &model.CloudInit{Files: files}}, key)
		if err == nil || !strings.Contains(err.Error(), "cloudInit.files[1] (/etc/app/token)") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// userDataParts extracts user-data from a seed image and splits its MIME
// parts, decoding each one's base64 body.
func userDataParts(t *testing.T, img []byte) []string {
	t.Helper()
	i := bytes.Index(img, []byte("Content-Type: multipart/mixed"))
	if i < 0 {
		t.Fatal("no multi-part user-data in the seed")
	}
	msg, err := mail.ReadMessage(bytes.NewReader(bytes.TrimRight(img[i:], "\x00")))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, p))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
}
