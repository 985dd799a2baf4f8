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

func indentBlock4(s string) []string {
	var out []string
	for _, l := range indentBlock(s) {
		out = append(out, "    "+l)
	}
	return out
}

// cloudInit.files: plain or encrypted content, never both; the encrypted
// field must be armour, and errors name the field without quoting it.
func TestCloudInitFilesEncrypted(t *testing.T) {
	ok := map[string]string{"sites/store-042.yaml": siteStore,
		"vms/a.yaml": userDataDoc(append([]string{"    files:",
			"      - path: /etc/motd", "        content: hello",
			"      - path: /etc/app/token", "        permissions: \"0600\"", "        contentEncrypted: |"},
			indentBlock4(armouredSecret)...)...)}
	got, err := Load(mapFS(ok))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	ci := got.VMs[0].Spec.CloudInit
	if ci == nil || len(ci.Files) != 2 || ci.Files[1].ContentEncrypted != armouredSecret || ci.Files[1].Permissions != "0600" || ci.Files[0].Content != "hello" {
		t.Fatalf("cloudInit = %+v", ci)
	}

	for name, tc := range map[string]struct {
		lines []string
		want  string
	}{
		"plaintext in the encrypted field": {[]string{"    files:", "      - path: /etc/app/token", "        contentEncrypted: \"hunter2\""},
			"spec.cloudInit.files[0].contentEncrypted: must be age armour"},
		"both fields": {append([]string{"    files:", "      - path: /etc/app/token", "        content: hunter2", "        contentEncrypted: |"}, indentBlock4(armouredSecret)...),
			"spec.cloudInit.files[0].content: content and contentEncrypted are mutually exclusive"},
		"relative path": {[]string{"    files:", "      - path: etc/motd", "        content: x"},
			`spec.cloudInit.files[0].path: "etc/motd" is not an absolute path`},
		"bad mode": {[]string{"    files:", "      - path: /etc/motd", "        permissions: \"rw\"", "        content: x"},
			`spec.cloudInit.files[0].permissions: "rw" is not an octal file mode`},
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
