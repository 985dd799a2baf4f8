package seed

import (
	"bytes"
	"fmt"

	"github.com/nkudo/nkudo/model"
)

// NoCloud builds the seed image of VM name: the spec's user-data (an empty
// cloud-config when it has none) and network-config, and meta-data whose
// instance-id changes with the spec hash so cloud-init reruns on a new spec.
func NoCloud(name string, spec model.VMSpec) ([]byte, error) {
	var user, netcfg string
	if spec.CloudInit != nil {
		user, netcfg = spec.CloudInit.UserData, spec.CloudInit.NetworkConfig
	}
	if user == "" {
		user = "#cloud-config\n{}\n"
	}
	metaData := fmt.Sprintf("instance-id: %s-%.12s\nlocal-hostname: %s\n", name, spec.Hash(), name)
	files := []File{{"user-data", []byte(user)}, {"meta-data", []byte(metaData)}}
	if netcfg != "" {
		files = append(files, File{"network-config", []byte(netcfg)})
	}
	var buf bytes.Buffer
	if err := WriteFAT(&buf, "CIDATA", files); err != nil {
		return nil, fmt.Errorf("cloud-init seed: %w", err)
	}
	return buf.Bytes(), nil
}
