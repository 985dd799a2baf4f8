package pki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Mode says where the CA comes from.
type Mode string

const (
	// ModeDev: CA and server certificate generated into the data dir on first
	// start. Convenient, and only as safe as that directory.
	ModeDev Mode = "dev"
	// ModePersistent: CA and server certificate loaded from operator-provided files.
	ModePersistent Mode = "persistent"
)

// File names used by Init and by dev mode inside its directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// Config selects and parameterises the CA. When any of the four file fields
// is set, all four must be, and the mode is persistent; otherwise the mode
// is dev, generating into DevDir.
type Config struct {
	// DevDir is where dev mode keeps its generated CA and server certificate.
	DevDir string
	// CACertFile, CAKeyFile, ServerCertFile, ServerKeyFile are the persistent-mode
	// files (env CA_CERT_FILE, CA_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE).
	CACertFile, CAKeyFile, ServerCertFile, ServerKeyFile string
	// RequirePersistent refuses dev mode (env REQUIRE_PERSISTENT_PKI=true).
	RequirePersistent bool
	// ServerHosts are extra DNS names or IPs the dev server certificate must
	// cover, besides localhost, 127.0.0.1 and ::1.
	ServerHosts []string
	// ClientCertTTL is the lifetime of agent certificates; zero means DefaultClientCertTTL.
	ClientCertTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Authority is a loaded CA plus the control plane's server certificate.
// It is safe for concurrent use.
type Authority struct {
	mode       Mode
	caCert     *x509.Certificate
	caKey      *ecdsa.PrivateKey
	caPEM      []byte
	pool       *x509.CertPool
	serverCert tls.Certificate
	clientTTL  time.Duration
	now        func() time.Time
}

// Load returns the Authority described by cfg. In persistent mode it names
// every missing file setting; with RequirePersistent it refuses dev mode and
// names the settings that would be needed.
func Load(cfg Config, logger *slog.Logger) (*Authority, error) {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	ttl := cfg.ClientCertTTL
	if ttl <= 0 {
		ttl = DefaultClientCertTTL
	}
	files := []struct{ env, val string }{
		{"CA_CERT_FILE", cfg.CACertFile},
		{"CA_KEY_FILE", cfg.CAKeyFile},
		{"SERVER_CERT_FILE", cfg.ServerCertFile},
		{"SERVER_KEY_FILE", cfg.ServerKeyFile},
	}
	var missing []string
	for _, f := range files {
		if f.val == "" {
			missing = append(missing, f.env)
		}
	}
	a := &Authority{clientTTL: ttl, now: now}
	switch {
	case len(missing) == 0:
		if err := a.loadFiles(cfg.CACertFile, cfg.CAKeyFile, cfg.ServerCertFile, cfg.ServerKeyFile); err != nil {
			return nil, err
		}
		a.mode = ModePersistent
		logger.Info("PKI loaded from files", "mode", a.mode, "ca_fingerprint", a.Fingerprint())
		return a, nil
	case len(missing) < len(files):
		return nil, fmt.Errorf("persistent PKI is partly configured: missing %s", strings.Join(missing, ", "))
	case cfg.RequirePersistent:
		return nil, fmt.Errorf("REQUIRE_PERSISTENT_PKI is set but persistent PKI is not configured: missing %s (create them with `nkudo pki init --dir DIR`)", strings.Join(missing, ", "))
	}
	if cfg.DevDir == "" {
		return nil, errors.New("dev PKI needs a directory")
	}
	if err := a.loadDev(cfg.DevDir, cfg.ServerHosts); err != nil {
		return nil, err
	}
	a.mode = ModeDev
	logger.Warn("DEV PKI IN USE: the CA private key was generated into the data dir and is only as safe as that directory; set CA_CERT_FILE, CA_KEY_FILE, SERVER_CERT_FILE and SERVER_KEY_FILE (see `nkudo pki init`) for production",
		"dir", cfg.DevDir, "ca_fingerprint", a.Fingerprint())
	return a, nil
}

func (a *Authority) loadFiles(caCertFile, caKeyFile, serverCertFile, serverKeyFile string) error {
	caCertPEM, err := os.ReadFile(caCertFile)
	if err != nil {
		return fmt.Errorf("read CA certificate: %w", err)
	}
	caKeyPEM, err := os.ReadFile(caKeyFile)
	if err != nil {
		return fmt.Errorf("read CA key: %w", err)
	}
	if err := a.setCA(caCertPEM, caKeyPEM, caCertFile, caKeyFile); err != nil {
		return err
	}
	sc, err := tls.LoadX509KeyPair(serverCertFile, serverKeyFile)
	if err != nil {
		return fmt.Errorf("load server certificate %s: %w", serverCertFile, err)
	}
	if err := a.verifyServer(sc.Leaf); err != nil {
		return fmt.Errorf("server certificate %s is not valid under CA %s: %w", serverCertFile, caCertFile, err)
	}
	a.serverCert = sc
	return nil
}

func (a *Authority) setCA(certPEM, keyPEM []byte, certName, keyName string) error {
	ca, key, err := ParseCA(certPEM, keyPEM, certName, keyName)
	if err != nil {
		return err
	}
	a.caCert, a.caKey, a.caPEM = ca, key, EncodeCertPEM(ca.Raw)
	a.pool = x509.NewCertPool()
	a.pool.AddCert(ca)
	return nil
}

// ParseCA parses a CA certificate (the first in certPEM) and its key, and
// checks that the certificate is a CA and the key is its own. Errors name
// certName and keyName (the files they came from).
func ParseCA(certPEM, keyPEM []byte, certName, keyName string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certs, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate %s: %w", certName, err)
	}
	ca := certs[0]
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("CA certificate %s is not a CA (basic constraints)", certName)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key %s: %w", keyName, err)
	}
	pub, ok := ca.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, fmt.Errorf("CA key %s does not match CA certificate %s", keyName, certName)
	}
	return ca, key, nil
}

// loadDev loads or generates the dev CA and server certificate in dir.
// The server certificate is reissued when it no longer covers every host or
// is about to expire.
func (a *Authority) loadDev(dir string, hosts []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create PKI dir: %w", err)
	}
	caCertPath, caKeyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, err1 := os.ReadFile(caCertPath)
	keyPEM, err2 := os.ReadFile(caKeyPath)
	switch {
	case err1 == nil && err2 == nil:
	case errors.Is(err1, fs.ErrNotExist) && errors.Is(err2, fs.ErrNotExist):
		cert, key, err := newCA(a.now(), "n-kudo dev CA")
		if err != nil {
			return err
		}
		certPEM = EncodeCertPEM(cert.Raw)
		if keyPEM, err = EncodeKeyPEM(key); err != nil {
			return err
		}
		if err := writeFiles(map[string][]byte{caKeyPath: keyPEM, caCertPath: certPEM}); err != nil {
			return err
		}
	default:
		return fmt.Errorf("dev PKI in %s is incomplete (%v; %v): remove the directory to regenerate", dir, err1, err2)
	}
	if err := a.setCA(certPEM, keyPEM, caCertPath, caKeyPath); err != nil {
		return err
	}
	all := append(DefaultServerHosts(), hosts...)
	srvCert, srvKey := filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile)
	if sc, err := tls.LoadX509KeyPair(srvCert, srvKey); err == nil && a.serverCertUsable(sc, all) {
		a.serverCert = sc
		return nil
	}
	sc, scPEM, skPEM, err := newServerCert(a.caCert, a.caKey, all, a.now())
	if err != nil {
		return err
	}
	if err := writeFiles(map[string][]byte{srvKey: skPEM, srvCert: scPEM}); err != nil {
		return err
	}
	a.serverCert = sc
	return nil
}

func (a *Authority) serverCertUsable(sc tls.Certificate, hosts []string) bool {
	leaf := sc.Leaf
	if leaf == nil || a.now().Add(30*24*time.Hour).After(leaf.NotAfter) {
		return false
	}
	if err := a.verifyServer(leaf); err != nil {
		return false
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// verifyServer checks that leaf is a server certificate valid now under the CA.
func (a *Authority) verifyServer(leaf *x509.Certificate) error {
	_, err := leaf.Verify(x509.VerifyOptions{Roots: a.pool, CurrentTime: a.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// writeFiles writes each file with mode 0600 through a temp file and rename,
// so a crash never leaves a half-written key behind.
func writeFiles(files map[string][]byte) error {
	for path, data := range files {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// InitFiles are the paths Init wrote.
type InitFiles struct {
	CACert, CAKey, ServerCert, ServerKey string
	// AuditKey is the audit chain's HMAC key (AuditKeyFile).
	AuditKey string
	// Fingerprint is the CA fingerprint agents pin at enrollment.
	Fingerprint string
}

// Init creates a persistent CA, a server certificate for hosts and the
// audit chain key in dir.
// It refuses to overwrite existing files.
func Init(dir string, hosts []string, now time.Time) (InitFiles, error) {
	f := InitFiles{
		CACert: filepath.Join(dir, CACertFile), CAKey: filepath.Join(dir, CAKeyFile),
		ServerCert: filepath.Join(dir, ServerCertFile), ServerKey: filepath.Join(dir, ServerKeyFile),
		AuditKey: filepath.Join(dir, AuditKeyFile),
	}
	for _, p := range []string{f.CACert, f.CAKey, f.ServerCert, f.ServerKey, f.AuditKey} {
		if _, err := os.Stat(p); err == nil {
			return InitFiles{}, fmt.Errorf("%s already exists: refusing to overwrite", p)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return InitFiles{}, fmt.Errorf("create %s: %w", dir, err)
	}
	ca, key, err := newCA(now, "n-kudo CA")
	if err != nil {
		return InitFiles{}, err
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return InitFiles{}, err
	}
	_, scPEM, skPEM, err := newServerCert(ca, key, append(DefaultServerHosts(), hosts...), now)
	if err != nil {
		return InitFiles{}, err
	}
	if err := writeFiles(map[string][]byte{f.CAKey: keyPEM, f.CACert: EncodeCertPEM(ca.Raw), f.ServerKey: skPEM, f.ServerCert: scPEM}); err != nil {
		return InitFiles{}, err
	}
	if err := NewAuditKeyFile(f.AuditKey); err != nil {
		return InitFiles{}, err
	}
	f.Fingerprint = Fingerprint(ca.Raw)
	return f, nil
}

// Mode reports whether the CA was generated (dev) or loaded from files.
func (a *Authority) Mode() Mode { return a.mode }

// CACert is the CA certificate.
func (a *Authority) CACert() *x509.Certificate { return a.caCert }

// CAPEM is the CA certificate in PEM, the bundle handed to agents.
func (a *Authority) CAPEM() []byte { return append([]byte(nil), a.caPEM...) }

// Pool is a certificate pool holding only the CA.
func (a *Authority) Pool() *x509.CertPool { return a.pool.Clone() }

// Fingerprint is the CA fingerprint, "sha256:<hex of DER>".
func (a *Authority) Fingerprint() string { return Fingerprint(a.caCert.Raw) }

// ServerCertificate is the control plane's TLS certificate, with the CA
// appended to the chain so that an enrolling agent can pin the CA by its
// fingerprint before it has the CA file.
func (a *Authority) ServerCertificate() tls.Certificate {
	sc := a.serverCert
	for _, der := range sc.Certificate[1:] {
		if string(der) == string(a.caCert.Raw) {
			return sc
		}
	}
	sc.Certificate = append(append([][]byte(nil), sc.Certificate...), a.caCert.Raw)
	return sc
}

// ClientCertTTL is the lifetime of the agent certificates this Authority issues.
func (a *Authority) ClientCertTTL() time.Duration { return a.clientTTL }

// Issued is a signed agent certificate.
type Issued struct {
	Cert     *x509.Certificate
	CertPEM  []byte
	Serial   string // SerialString of the certificate serial
	NotAfter time.Time
}

// Sign issues a client certificate for id with the public key of csrPEM.
// The identity comes from the caller (the redeemed enrollment token or the
// current certificate), never from the request's own names.
func (a *Authority) Sign(csrPEM []byte, id Identity) (Issued, error) {
	return a.SignAt(csrPEM, id, a.now(), a.clientTTL)
}

// SignAt is Sign with an explicit validity start and lifetime; tests use it
// to mint already-expired certificates.
func (a *Authority) SignAt(csrPEM []byte, id Identity, notBefore time.Time, ttl time.Duration) (Issued, error) {
	if id.Tenant == "" || id.Site == "" {
		return Issued{}, fmt.Errorf("sign: identity needs tenant and site, got %q", id.String())
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return Issued{}, err
	}
	serial, err := randomSerial()
	if err != nil {
		return Issued{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id.CommonName(), Organization: []string{id.Tenant}, OrganizationalUnit: []string{id.Site}},
		URIs:         []*url.URL{id.URI()},
		NotBefore:    notBefore.Add(-time.Minute), // tolerate small clock skew at the edge
		NotAfter:     notBefore.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.caCert, csr.PublicKey, a.caKey)
	if err != nil {
		return Issued{}, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Issued{}, fmt.Errorf("parse issued certificate: %w", err)
	}
	return Issued{Cert: cert, CertPEM: EncodeCertPEM(der), Serial: SerialString(serial), NotAfter: cert.NotAfter}, nil
}

// VerifyClient checks that cert chains to the CA, is valid now and is meant
// for client authentication, and returns the identity it names. Revocation
// is the caller's business (the store knows the revoked serials).
func (a *Authority) VerifyClient(cert *x509.Certificate) (Identity, error) {
	if err := a.CheckValidity(cert); err != nil {
		return Identity{}, err
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: a.pool, CurrentTime: a.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return Identity{}, fmt.Errorf("client certificate not issued by this control plane: %w", err)
	}
	return IdentityFromCert(cert)
}

// CheckValidity checks only the validity window of cert against the
// Authority's clock: what can change for a certificate that VerifyClient
// accepted before, so callers caching VerifyClient results re-check it.
func (a *Authority) CheckValidity(cert *x509.Certificate) error {
	now := a.now()
	if now.After(cert.NotAfter) {
		return fmt.Errorf("client certificate expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("client certificate not valid before %s", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// Revoked is one revoked certificate for the CRL.
type Revoked struct {
	Serial    string // SerialString form
	RevokedAt time.Time
}

// CRL returns a DER certificate revocation list signed by the CA, valid for
// validity from now.
func (a *Authority) CRL(revoked []Revoked, validity time.Duration) ([]byte, error) {
	now := a.now()
	entries := make([]x509.RevocationListEntry, 0, len(revoked))
	for _, r := range revoked {
		n, err := ParseSerial(r.Serial)
		if err != nil {
			return nil, fmt.Errorf("crl: %w", err)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: r.RevokedAt.UTC()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(now.UnixNano()),
		ThisUpdate:                now,
		NextUpdate:                now.Add(validity),
		RevokedCertificateEntries: entries,
	}, a.caCert, a.caKey)
	if err != nil {
		return nil, fmt.Errorf("create CRL: %w", err)
	}
	return der, nil
}
