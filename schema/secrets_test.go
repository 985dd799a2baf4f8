package schema

import (
	"strings"
	"testing"
)

const armouredSecret = "-----BEGIN AGE ENCRYPTED FILE-----\n" +
	"YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBQL1VUalNrd2lCT2lEUWZD\n" +
	"aAOHbA==\n" +
	"-----END AGE ENCRYPTED FILE-----\n"

func userDataDoc(lines ...string) string {
	return vmDocText("pos-1", "store-042", append([]string{
		"  state: Running", "  cpus: 2", "  memoryMiB: 1024",
		"  image: {url: https://images.example.com/pos.raw, sha256: " + digestA + "}",
		"  kernel: {url: https://images.example.com/vmlinux, sha256: " + digestB + ", cmdline: console=ttyS0}",
		"  cloudInit:"}, lines...)...)
}

func indentBlock(s string) []string {
	var out []string
	for l := range strings.SplitSeq(strings.TrimSuffix(s, "\n"), "\n") {
		out = append(out, "      "+l)
	}
	return out
}

func TestUserDataEncrypted(t *testing.T) {
	ok := map[string]string{"sites/store-042.yaml": siteStore,
		"vms/a.yaml": userDataDoc(append([]string{"    userDataEncrypted: |"}, indentBlock(armouredSecret)...)...)}
	got, err := Load(mapFS(ok))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if ci := got.VMs[0].Spec.CloudInit; ci == nil || ci.UserDataEncrypted != armouredSecret || ci.UserData != "" {
		t.Fatalf("cloudInit = %+v", ci)
	}

	for name, tc := range map[string]struct {
		lines []string
		want  string
	}{
		"plaintext in the encrypted field": {[]string{"    userDataEncrypted: \"#cloud-config\\npassword: hunter2\\n\""},
			"spec.cloudInit.userDataEncrypted: must be age armour"},
		"both fields": {append([]string{"    userData: \"#cloud-config\\n\"", "    userDataEncrypted: |"}, indentBlock(armouredSecret)...),
			"spec.cloudInit.userData: userData and userDataEncrypted are mutually exclusive"},
	} {
		_, err := Load(mapFS(map[string]string{"sites/store-042.yaml": siteStore, "vms/a.yaml": userDataDoc(tc.lines...)}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error quotes the value: %v", name, err)
		}
	}
}
