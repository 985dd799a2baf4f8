package seed

import (
	"bytes"
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

// Decrypt opens age armour addressed to siteKey. Its errors name the
// site's recipient, never any of the plaintext.
func Decrypt(armoured string, siteKey *age.X25519Identity) ([]byte, error) {
	if siteKey == nil {
		return nil, errors.New("user-data is encrypted but this agent has no site key")
	}
	r, err := age.Decrypt(armor.NewReader(strings.NewReader(armoured)), siteKey)
	if err != nil {
		if _, ok := errors.AsType[*age.NoIdentityMatchError](err); ok {
			return nil, fmt.Errorf("user-data is not encrypted to this site's key (%s)", siteKey.Recipient())
		}
		return nil, fmt.Errorf("decrypt user-data: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(r, maxUserData+1))
	if err != nil {
		return nil, fmt.Errorf("decrypt user-data: %w", err)
	}
	if len(b) > maxUserData {
		return nil, fmt.Errorf("decrypted user-data is larger than %d bytes", maxUserData)
	}
	return b, nil
}
