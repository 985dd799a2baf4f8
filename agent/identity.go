package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/nkudo/nkudo/agent/internal/atomicfile"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/pki"
)

// Files of the PKI dir.
const (
	keyFile      = "agent.key"     // ECDSA P-256, PEM, 0600
	certFile     = "agent.crt"     // client certificate, PEM
	caFile       = "ca.crt"        // the control plane's CA, PEM
	identityFile = "identity.json" // tenant, site, control plane, NetBird (0600: holds the setup key)
)

// ErrEnrolled is returned by Enroll when the PKI dir already holds an identity.
var ErrEnrolled = errors.New("already enrolled (use --force to enroll again)")

// identityDoc is identity.json.
type identityDoc struct {
	Tenant       string             `json:"tenant"`
	Site         string             `json:"site"`
	ControlPlane string             `json:"controlPlane"`
	NetBird      *api.NetBirdConfig `json:"netbird,omitempty"`
}

// Identity is the agent's enrolled identity: key, certificate and the CA
// it trusts. It is safe for concurrent use; Renew swaps the certificate.
type Identity struct {
	dir     string
	doc     identityDoc
	siteKey *age.X25519Identity

	mu   sync.Mutex
	cert *tls.Certificate
	leaf *x509.Certificate
	pool *x509.CertPool
}

// Tenant, Site and ControlPlane name the identity.
func (id *Identity) Tenant() string       { return id.doc.Tenant }
func (id *Identity) Site() string         { return id.doc.Site }
func (id *Identity) ControlPlane() string { return id.doc.ControlPlane }

// NetBird is the site's NetBird configuration from enrollment (nil = none).
// The setup key inside is a secret: never log it.
func (id *Identity) NetBird() *api.NetBirdConfig { return id.doc.NetBird }

// Certificate is the current client certificate (for api.ClientConfig).
func (id *Identity) Certificate() (*tls.Certificate, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cert, nil
}

// RootCAs trusts the control plane's CA.
func (id *Identity) RootCAs() *x509.CertPool {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.pool
}

// Validity returns the current certificate's validity window.
func (id *Identity) Validity() (notBefore, notAfter time.Time) {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.leaf.NotBefore, id.leaf.NotAfter
}

func newKeyAndCSR(site string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: site}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// pinnedCA returns the PEM of the CA certificate in bundle whose
// fingerprint is pin; anything else in the bundle is not trusted.
func pinnedCA(bundle, pin string) ([]byte, error) {
	rest := []byte(bundle)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("no CA in the enrollment answer matches %s", pin)
		}
		if b.Type == "CERTIFICATE" && strings.EqualFold(pki.Fingerprint(b.Bytes), pin) {
			return pem.EncodeToMemory(b), nil
		}
	}
}

// EnrollOptions are the inputs of Enroll.
type EnrollOptions struct {
	ControlPlane string
	Token        string
	// CAHash is the "sha256:<hex>" fingerprint printed with the token: the
	// control plane's CA must match it before anything is trusted.
	CAHash   string
	PKIDir   string
	Force    bool
	Hostname string
}

// Enroll generates a key, sends a CSR with the one-time token over a TLS
// connection pinned to CAHash, and stores key (0600), certificate, CA and
// identity in PKIDir. An existing identity is kept unless Force is set.
func Enroll(ctx context.Context, o EnrollOptions, logger *slog.Logger) (*Identity, error) {
	if o.ControlPlane == "" || o.Token == "" || o.CAHash == "" || o.PKIDir == "" {
		return nil, errors.New("enroll: control plane URL, token, CA hash and PKI dir are all required")
	}
	pin := strings.ToLower(o.CAHash)
	if !strings.HasPrefix(pin, "sha256:") || len(pin) != len("sha256:")+64 {
		return nil, fmt.Errorf("enroll: CA hash %q: want sha256:<64 hex digits>", o.CAHash)
	}
	if _, err := os.Stat(filepath.Join(o.PKIDir, certFile)); err == nil && !o.Force {
		return nil, fmt.Errorf("enroll into %s: %w", o.PKIDir, ErrEnrolled)
	}
	if err := os.MkdirAll(o.PKIDir, 0o700); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	key, csr, err := newKeyAndCSR("nkudo-edge")
	if err != nil {
		return nil, err
	}
	c, err := api.NewClient(api.ClientConfig{BaseURL: o.ControlPlane, CAFingerprint: pin, UserAgent: "nkudo-edge"})
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	defer c.CloseIdleConnections()
	resp, err := c.Enroll(ctx, api.EnrollRequest{Token: o.Token, CSR: string(csr), Hostname: o.Hostname})
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: %w", o.ControlPlane, err)
	}
	ca, err := pinnedCA(resp.CA, pin)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	doc := identityDoc{Tenant: resp.Tenant, Site: resp.Site, ControlPlane: o.ControlPlane, NetBird: resp.NetBird}
	// A new enrollment (perhaps as another site) gets a new site key, so
	// secrets encrypted to the old identity stay unreadable here.
	if err := os.Remove(filepath.Join(o.PKIDir, siteKeyFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("enroll: remove old site key: %w", err)
	}
	if err := writeIdentity(o.PKIDir, kp, []byte(resp.Certificate), ca, doc); err != nil {
		return nil, err
	}
	if logger != nil {
		logger.Info("enrolled", "tenant", resp.Tenant, "site", resp.Site, "notAfter", resp.NotAfter, "pkiDir", o.PKIDir)
	}
	return LoadIdentity(o.PKIDir)
}

func writeIdentity(dir string, key, cert, ca []byte, doc identityDoc) error {
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	// Key first: a certificate is only ever on disk next to its key.
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{keyFile, key, 0o600}, {caFile, ca, 0o644}, {identityFile, b, 0o600}, {certFile, cert, 0o644}} {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}

// LoadIdentity reads an enrolled identity from dir.
func LoadIdentity(dir string) (*Identity, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: not enrolled (run nkudo-edge enroll): %w", dir, err)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		return b, nil
	}
	var doc identityDoc
	b, err := read(identityFile)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, identityFile), err)
	}
	id := &Identity{dir: dir, doc: doc}
	caPEM, err := read(caFile)
	if err != nil {
		return nil, err
	}
	id.pool = x509.NewCertPool()
	if !id.pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no certificate", filepath.Join(dir, caFile))
	}
	certPEM, err := read(certFile)
	if err != nil {
		return nil, err
	}
	kp, err := read(keyFile)
	if err != nil {
		return nil, err
	}
	if err := id.set(certPEM, kp); err != nil {
		return nil, err
	}
	if id.siteKey, err = loadOrCreateSiteKey(dir); err != nil {
		return nil, err
	}
	return id, nil
}

func (id *Identity) set(certPEM, keyPEM []byte) error {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("load certificate from %s: %w", id.dir, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return fmt.Errorf("parse certificate: %w", err)
	}
	cert.Leaf = leaf
	id.mu.Lock()
	id.cert, id.leaf = &cert, leaf
	id.mu.Unlock()
	return nil
}

// RenewAt is when to renew: at a random 70–90 % of the certificate's
// lifetime, so a fleet enrolled together does not renew together.
func (id *Identity) RenewAt() time.Time {
	nb, na := id.Validity()
	life := na.Sub(nb)
	return nb.Add(time.Duration((0.7 + 0.2*mrand.Float64()) * float64(life)))
}

// Renew gets a new certificate for a new key over the current mTLS
// identity, stores both and swaps them in; closeIdle makes the client's
// next request handshake with the new certificate.
func (id *Identity) Renew(ctx context.Context, c *api.Client) error {
	key, csr, err := newKeyAndCSR(id.doc.Site)
	if err != nil {
		return err
	}
	resp, err := c.Renew(ctx, api.RenewRequest{CSR: string(csr)})
	if err != nil {
		return fmt.Errorf("renew certificate: %w", err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return err
	}
	if _, err := tls.X509KeyPair([]byte(resp.Certificate), kp); err != nil {
		return fmt.Errorf("renewed certificate does not match the new key: %w", err)
	}
	if resp.NetBird != nil {
		id.doc.NetBird = resp.NetBird
	}
	ca, err := os.ReadFile(filepath.Join(id.dir, caFile))
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if err := writeIdentity(id.dir, kp, []byte(resp.Certificate), ca, id.doc); err != nil {
		return err
	}
	if err := id.set([]byte(resp.Certificate), kp); err != nil {
		return err
	}
	c.CloseIdleConnections()
	return nil
}

// RenewLoop renews the certificate at RenewAt, retrying with backoff, until ctx ends.
func (id *Identity) RenewLoop(ctx context.Context, c *api.Client, logger *slog.Logger) error {
	for {
		wait := time.Until(id.RenewAt())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(max(wait, 0)):
		}
		backoff := 5 * time.Second
		for {
			err := id.Renew(ctx, c)
			if err == nil {
				_, na := id.Validity()
				logger.Info("certificate renewed", "notAfter", na)
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			logger.Warn("certificate renewal failed; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(jitter(backoff)):
			}
			backoff = min(backoff*2, 10*time.Minute)
		}
	}
}
