package debugbundle

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestScrub(t *testing.T) {
	secrets := [][]byte{[]byte("setup-key-123456")}
	block := "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\nAoGCCqGSM49\n-----END EC PRIVATE KEY-----\n"
	cases := []struct {
		name, in, want string
		n              int
		drop           bool
	}{
		{name: "clean", in: "nothing to see\n", want: "nothing to see\n"},
		{name: "secret", in: "key=setup-key-123456 and setup-key-123456", want: "key=[REDACTED] and [REDACTED]", n: 2},
		{name: "pem block", in: "a\n" + block + "b\n", want: "a\n[REDACTED private key block]\nb\n", n: 1},
		{name: "pkcs8 and rsa", in: "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n-----BEGIN RSA PRIVATE KEY-----\ny\n-----END RSA PRIVATE KEY-----",
			want: "[REDACTED private key block]\n[REDACTED private key block]", n: 2},
		{name: "start cut off", in: "AoGCCqGSM49\n-----END EC PRIVATE KEY-----\nlater\n", want: "[REDACTED private key block]\nlater\n", n: 1},
		{name: "end cut off", in: "before\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB", want: "before\n[REDACTED private key block]", n: 1},
		{name: "bare marker", in: "here is the PRIVATE KEY: MHcCAQEEIB", drop: true},
		{name: "certificate kept", in: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
			want: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, n, drop := scrub([]byte(c.in), secrets)
			if (drop != "") != c.drop {
				t.Fatalf("drop = %q, want drop %v", drop, c.drop)
			}
			if c.drop {
				if out != nil {
					t.Errorf("dropped file still returned %q", out)
				}
				return
			}
			if d := cmp.Diff(c.want, string(out)); d != "" || n != c.n {
				t.Errorf("scrub: %d redactions, want %d (-want +got):\n%s", n, c.n, d)
			}
		})
	}
}

func TestRedactMeta(t *testing.T) {
	doc := map[string]any{
		"name": "pos-1",
		"spec": map[string]any{
			"image":     map[string]any{"url": "https://u:p4ssw0rd@img.example/pos.raw?sig=abcdef123", "sha256": "00"},
			"kernel":    map[string]any{"url": "https://img.example/k", "cmdline": "console=ttyS0"},
			"cloudInit": map[string]any{"userData": "#cloud-config\npassword: x\n"},
			"apiToken":  "tok-123456",
		},
	}
	var found []string
	n := redactMeta(doc, func(s string) { found = append(found, s) })
	spec := doc["spec"].(map[string]any)
	if u := spec["image"].(map[string]any)["url"]; u != "https://[REDACTED]@img.example/pos.raw?[REDACTED]" {
		t.Errorf("image url = %q", u)
	}
	if u := spec["kernel"].(map[string]any)["url"]; u != "https://img.example/k" {
		t.Errorf("kernel url = %q", u)
	}
	for _, k := range []string{"apiToken"} {
		if v := spec[k].(string); len(v) < 11 || v[:11] != "[REDACTED] " {
			t.Errorf("%s = %q", k, v)
		}
	}
	if v := spec["cloudInit"].(map[string]any)["userData"].(string); len(v) < 11 || v[:11] != "[REDACTED] " {
		t.Errorf("userData = %q", v)
	}
	if n != 3 {
		t.Errorf("%d redactions, want 3", n)
	}
	wantFound := map[string]bool{"p4ssw0rd": true, "u:p4ssw0rd": true, "sig=abcdef123": true, "#cloud-config\npassword: x\n": true, "tok-123456": true}
	got := map[string]bool{}
	for _, f := range found {
		got[f] = true
	}
	if d := cmp.Diff(wantFound, got); d != "" {
		t.Errorf("found (-want +got):\n%s", d)
	}
}

// The site's age identity is a key file like agent.key: listed, never read.
func TestIsKeyFileSiteKey(t *testing.T) {
	for name, want := range map[string]bool{"agent.key": true, "site.agekey": true, "ca.crt": false, "identity.json": false} {
		if got := isKeyFile(name); got != want {
			t.Errorf("isKeyFile(%q) = %v, want %v", name, got, want)
		}
	}
}

// Every value of cloudInit.files, plain or encrypted, is redacted too.
func TestRedactMetaCloudInitFiles(t *testing.T) {
	file := map[string]any{"path": "/etc/app/token", "content": "token=hunter2-file"}
	enc := map[string]any{"path": "/etc/app/key", "contentEncrypted": "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n"}
	doc := map[string]any{"spec": map[string]any{"cloudInit": map[string]any{"files": []any{file, enc}}}}
	redactMeta(doc, func(string) {})
	for _, v := range []any{file["content"], enc["contentEncrypted"]} {
		if s := v.(string); len(s) < 11 || s[:11] != "[REDACTED] " {
			t.Errorf("file value = %q", s)
		}
	}
}
