package seed

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/nkudo/nkudo/model"
)

// maxUserData bounds decrypted user-data (the schema allows 64 KiB of
// plain user-data; the armour of that is larger, the plaintext is not).
const maxUserData = 1 << 20

// NoCloud builds the seed image of VM name: the spec's user-data (an empty
// cloud-config when it has none) and network-config, and meta-data whose
// instance-id changes with the spec hash so cloud-init reruns on a new spec.
// Encrypted user-data is decrypted with siteKey here, just before it is
// written, and never leaves the returned image.
func NoCloud(name string, spec model.VMSpec, siteKey *age.X25519Identity) ([]byte, error) {
	var user []byte
	var netcfg string
	if ci := spec.CloudInit; ci != nil {
		user, netcfg = []byte(ci.UserData), ci.NetworkConfig
		if ci.UserDataEncrypted != "" {
			var err error
			if user, err = Decrypt(ci.UserDataEncrypted, siteKey); err != nil {
				return nil, fmt.Errorf("cloud-init seed: %w", err)
			}
		}
	}
	if ci := spec.CloudInit; ci != nil && len(ci.Files) > 0 {
		wf, err := writeFiles(ci.Files, siteKey)
		if err != nil {
			return nil, fmt.Errorf("cloud-init seed: %w", err)
		}
		user = withWriteFiles(user, wf)
	}
	if len(user) == 0 {
		user = []byte("#cloud-config\n{}\n")
	}
	metaData := fmt.Sprintf("instance-id: %s-%.12s\nlocal-hostname: %s\n", name, spec.Hash(), name)
	files := []File{{"user-data", user}, {"meta-data", []byte(metaData)}}
	if netcfg != "" {
		files = append(files, File{"network-config", []byte(netcfg)})
	}
	var buf bytes.Buffer
	if err := WriteFAT(&buf, "CIDATA", files); err != nil {
		return nil, fmt.Errorf("cloud-init seed: %w", err)
	}
	return buf.Bytes(), nil
}

// writeFiles renders the files as a cloud-config write_files document,
// decrypting contentEncrypted with siteKey. Content is base64 so any bytes
// survive YAML; paths are JSON-quoted, which YAML reads as the same string.
// merge_how appends to (rather than replaces) write_files and other lists
// of a cloud-config in the user's own user-data.
func writeFiles(files []model.CloudInitFile, siteKey *age.X25519Identity) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("#cloud-config\nmerge_how:\n  - name: list\n    settings: [append]\n  - name: dict\n    settings: [no_replace, recurse_list]\nwrite_files:\n")
	for i, f := range files {
		content := []byte(f.Content)
		if f.ContentEncrypted != "" {
			var err error
			if content, err = decrypt(f.ContentEncrypted, siteKey, fmt.Sprintf("cloudInit.files[%d] (%s)", i, f.Path)); err != nil {
				return nil, err
			}
		}
		path, _ := json.Marshal(f.Path) // a string always marshals
		fmt.Fprintf(&b, "  - path: %s\n    encoding: b64\n    content: %s\n", path, base64.StdEncoding.EncodeToString(content))
		if f.Permissions != "" {
			fmt.Fprintf(&b, "    permissions: %q\n", f.Permissions)
		}
	}
	return b.Bytes(), nil
}

// withWriteFiles combines the user's user-data with the write_files
// document: alone when there is no user-data, otherwise as a MIME
// multi-part that cloud-init splits and merges. The user's part is
// text/x-not-multipart so cloud-init detects its type (#cloud-config,
// #!, ...) as it would for single user-data. The boundary is derived from
// the content, so the same spec gives the same seed.
func withWriteFiles(user, wf []byte) []byte {
	if len(user) == 0 {
		return wf
	}
	sum := sha256.Sum256(append(append([]byte{}, user...), wf...))
	boundary := "nkudo-" + hex.EncodeToString(sum[:16])
	var b bytes.Buffer
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\nMIME-Version: 1.0\n\n", boundary)
	for _, p := range []struct {
		ctype string
		body  []byte
	}{{"text/x-not-multipart", user}, {"text/cloud-config", wf}} {
		fmt.Fprintf(&b, "--%s\nContent-Type: %s; charset=\"utf-8\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: base64\n\n", boundary, p.ctype)
		enc := base64.StdEncoding.EncodeToString(p.body)
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\n")
	}
	fmt.Fprintf(&b, "--%s--\n", boundary)
	return b.Bytes()
}

// Decrypt opens age armour addressed to siteKey. Its errors name the
// site's recipient, never any of the plaintext.
func Decrypt(armoured string, siteKey *age.X25519Identity) ([]byte, error) {
	return decrypt(armoured, siteKey, "user-data")
}

// decrypt is Decrypt for the value named what in its errors.
func decrypt(armoured string, siteKey *age.X25519Identity, what string) ([]byte, error) {
	if siteKey == nil {
		return nil, fmt.Errorf("%s is encrypted but this agent has no site key", what)
	}
	r, err := age.Decrypt(armor.NewReader(strings.NewReader(armoured)), siteKey)
	if err != nil {
		if _, ok := errors.AsType[*age.NoIdentityMatchError](err); ok {
			return nil, fmt.Errorf("%s is not encrypted to this site's key (%s)", what, siteKey.Recipient())
		}
		return nil, fmt.Errorf("decrypt %s: %w", what, err)
	}
	b, err := io.ReadAll(io.LimitReader(r, maxUserData+1))
	if err != nil {
		return nil, fmt.Errorf("decrypt %s: %w", what, err)
	}
	if len(b) > maxUserData {
		return nil, fmt.Errorf("decrypted %s is larger than %d bytes", what, maxUserData)
	}
	return b, nil
}
