package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mustCSR(t *testing.T) []byte {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(k, "agent")
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestDevModeGeneratesOnceAndReloads(t *testing.T) {
	dir := t.TempDir()
	a1, err := Load(Config{DevDir: dir}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if a1.Mode() != ModeDev {
		t.Fatalf("mode = %s, want dev", a1.Mode())
	}
	a2, err := Load(Config{DevDir: dir, ServerHosts: []string{"cp.example.net"}}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if a1.Fingerprint() != a2.Fingerprint() {
		t.Fatalf("CA changed across loads: %s vs %s", a1.Fingerprint(), a2.Fingerprint())
	}
	if err := a2.ServerCertificate().Leaf.VerifyHostname("cp.example.net"); err != nil {
		t.Fatalf("server cert not reissued for new host: %v", err)
	}
	if !strings.HasPrefix(a1.Fingerprint(), "sha256:") || len(a1.Fingerprint()) != len("sha256:")+64 {
		t.Fatalf("fingerprint %q has wrong shape", a1.Fingerprint())
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"partial", Config{CACertFile: "x", CAKeyFile: "y"}, []string{"SERVER_CERT_FILE", "SERVER_KEY_FILE"}},
		{"require persistent", Config{DevDir: t.TempDir(), RequirePersistent: true}, []string{"REQUIRE_PERSISTENT_PKI", "CA_CERT_FILE", "CA_KEY_FILE", "SERVER_CERT_FILE", "SERVER_KEY_FILE"}},
		{"missing file", Config{CACertFile: "/nonexistent/ca.crt", CAKeyFile: "k", ServerCertFile: "c", ServerKeyFile: "k"}, []string{"/nonexistent/ca.crt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.cfg, discard())
			if err == nil {
				t.Fatal("Load succeeded, want error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestInitThenPersistent(t *testing.T) {
	dir := t.TempDir()
	files, err := Init(dir, []string{"cp.example.net"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(dir, nil, time.Now()); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second Init: err = %v, want refusal", err)
	}
	a, err := Load(Config{CACertFile: files.CACert, CAKeyFile: files.CAKey, ServerCertFile: files.ServerCert, ServerKeyFile: files.ServerKey, RequirePersistent: true}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if a.Mode() != ModePersistent || a.Fingerprint() != files.Fingerprint {
		t.Fatalf("mode %s fingerprint %s, want persistent %s", a.Mode(), a.Fingerprint(), files.Fingerprint)
	}
	// A server certificate from another CA is refused.
	other := t.TempDir()
	of, err := Init(other, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, err = Load(Config{CACertFile: files.CACert, CAKeyFile: files.CAKey, ServerCertFile: of.ServerCert, ServerKeyFile: of.ServerKey}, discard())
	if err == nil || !strings.Contains(err.Error(), "not valid under CA") {
		t.Fatalf("foreign server cert: err = %v", err)
	}
}

func TestSignAndVerifyClient(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := now
	a, err := Load(Config{DevDir: t.TempDir(), ClientCertTTL: time.Hour, Now: func() time.Time { return clock }}, discard())
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{Tenant: "acme", Site: "store-042"}
	iss, err := a.Sign(mustCSR(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if got := iss.Cert.URIs[0].String(); got != "nkudo://tenant/acme/site/store-042" {
		t.Errorf("URI SAN = %s", got)
	}
	if iss.Cert.Subject.CommonName != "store-042.acme" {
		t.Errorf("CN = %s", iss.Cert.Subject.CommonName)
	}
	if !iss.NotAfter.Equal(now.Add(time.Hour)) {
		t.Errorf("NotAfter = %s, want %s", iss.NotAfter, now.Add(time.Hour))
	}
	got, err := a.VerifyClient(iss.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(id, got); diff != "" {
		t.Errorf("identity (-want +got):\n%s", diff)
	}
	clock = now.Add(2 * time.Hour)
	if _, err := a.VerifyClient(iss.Cert); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired cert: err = %v", err)
	}
	clock = now
	b, err := Load(Config{DevDir: t.TempDir()}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.VerifyClient(iss.Cert); err == nil {
		t.Error("cert from another CA verified")
	}
}

func TestSignRejectsBadCSR(t *testing.T) {
	a, err := Load(Config{DevDir: t.TempDir()}, discard())
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rk)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string][]byte{
		"garbage": []byte("not a csr"),
		"rsa":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
	}
	for name, csr := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := a.Sign(csr, Identity{Tenant: "t", Site: "s"}); err == nil {
				t.Fatal("Sign accepted a bad CSR")
			}
		})
	}
	if _, err := a.Sign(mustCSR(t), Identity{Tenant: "t"}); err == nil {
		t.Fatal("Sign accepted an identity without a site")
	}
}

func TestIdentityRoundTripEscapes(t *testing.T) {
	id := Identity{Tenant: "a b/c", Site: "s%1"}
	a, err := Load(Config{DevDir: filepath.Join(t.TempDir(), "pki")}, discard())
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.Sign(mustCSR(t), id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := IdentityFromCert(iss.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if got != id {
		t.Fatalf("got %+v, want %+v", got, id)
	}
	if _, err := IdentityFromCert(a.CACert()); err == nil {
		t.Fatal("CA cert yielded an identity")
	}
}

func TestCRLListsRevokedSerials(t *testing.T) {
	a, err := Load(Config{DevDir: t.TempDir()}, discard())
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.Sign(mustCSR(t), Identity{Tenant: "t", Site: "s"})
	if err != nil {
		t.Fatal(err)
	}
	der, err := a.CRL([]Revoked{{Serial: iss.Serial, RevokedAt: time.Now()}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(a.CACert()); err != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || SerialString(crl.RevokedCertificateEntries[0].SerialNumber) != iss.Serial {
		t.Fatalf("CRL entries = %+v, want serial %s", crl.RevokedCertificateEntries, iss.Serial)
	}
}

func TestParseCANamesTheFaultyFile(t *testing.T) {
	files, err := Init(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	caPEM, caKey, srvPEM, srvKey := read(files.CACert), read(files.CAKey), read(files.ServerCert), read(files.ServerKey)
	ca, _, err := ParseCA(caPEM, caKey, "ca.crt", "ca.key")
	if err != nil || Fingerprint(ca.Raw) != files.Fingerprint {
		t.Fatalf("ParseCA of Init's files = %v", err)
	}
	tests := []struct {
		name          string
		certPEM, key  []byte
		wantInMessage string
	}{
		{"garbage certificate", []byte("x"), caKey, "CA certificate ca.crt"},
		{"server certificate", srvPEM, srvKey, "ca.crt is not a CA"},
		{"garbage key", caPEM, []byte("x"), "CA key ca.key"},
		{"foreign key", caPEM, srvKey, "CA key ca.key does not match CA certificate ca.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseCA(tt.certPEM, tt.key, "ca.crt", "ca.key")
			if err == nil || !strings.Contains(err.Error(), tt.wantInMessage) {
				t.Errorf("err = %v, want one with %q", err, tt.wantInMessage)
			}
		})
	}
}

// TestAuditKeyLifecycle: a missing key is made fresh under a pending name
// and moved into place by Commit; from then on it loads as not fresh, and
// a crash before Commit leaves it fresh for the next start. Without create
// a missing key is no key.
func TestAuditKeyLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pki", AuditKeyFile)
	if k, err := LoadAuditKey(path, false); err != nil || k.Key != nil {
		t.Fatalf("missing key without create = %+v, %v; want none", k.Fresh, err)
	}
	k, err := LoadAuditKey(path, true)
	if err != nil || len(k.Key) != 32 || !k.Fresh {
		t.Fatalf("created key: fresh=%v len=%d, %v", k.Fresh, len(k.Key), err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("key in place before Commit: %v", err)
	}
	again, err := LoadAuditKey(path, true) // a crash before Commit
	if err != nil || !again.Fresh || !bytes.Equal(again.Key, k.Key) {
		t.Fatalf("pending key after a crash: fresh=%v same=%v, %v", again.Fresh, bytes.Equal(again.Key, k.Key), err)
	}
	if err := again.Commit(); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadAuditKey(path, true)
	if err != nil || loaded.Fresh || !bytes.Equal(loaded.Key, k.Key) {
		t.Fatalf("committed key: fresh=%v same=%v, %v", loaded.Fresh, bytes.Equal(loaded.Key, k.Key), err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v, %v; want 0600", fi, err)
	}
	if err := os.WriteFile(path, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAuditKey(path, true); err == nil {
		t.Error("a malformed key loaded")
	}
}
