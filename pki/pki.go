// Package pki owns n-kudo's certificate authority: loading it in dev
// (generated into the data dir) or persistent (operator-provided files) mode,
// signing agent CSRs into short-lived client certificates whose identity names
// a tenant and a site, parsing that identity back, and publishing a CRL.
//
// Every key is ECDSA P-256. The package does no network I/O and keeps no
// global state; the clock is passed in by callers that need to control it.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// Errors returned by identity parsing and CSR signing.
var (
	// ErrNoIdentity means a certificate carries no nkudo:// identity URI.
	ErrNoIdentity = errors.New("certificate carries no n-kudo identity")
	// ErrBadCSR means a certificate request is malformed, badly signed or uses a key type other than ECDSA P-256.
	ErrBadCSR = errors.New("invalid certificate request")
)

// DefaultClientCertTTL is how long an agent certificate is valid when the
// configuration does not say otherwise. Agents renew well before expiry.
const DefaultClientCertTTL = 24 * time.Hour

// identityScheme is the URI scheme of the SAN that names an agent's identity.
const identityScheme = "nkudo"

// Identity is who an agent certificate speaks for: one site of one tenant.
type Identity struct {
	Tenant string
	Site   string
}

// URI is the SAN URI that encodes the identity: nkudo://tenant/<tenant>/site/<site>.
func (id Identity) URI() *url.URL {
	return &url.URL{
		Scheme:  identityScheme,
		Host:    "tenant",
		Path:    "/" + id.Tenant + "/site/" + id.Site,
		RawPath: "/" + url.PathEscape(id.Tenant) + "/site/" + url.PathEscape(id.Site),
	}
}

// CommonName is the certificate CN for the identity, for humans reading the certificate.
func (id Identity) CommonName() string { return id.Site + "." + id.Tenant }

func (id Identity) String() string { return id.Tenant + "/" + id.Site }

// IdentityFromCert returns the identity encoded in a certificate's URI SAN.
// It does not verify the certificate; callers verify the chain first.
func IdentityFromCert(c *x509.Certificate) (Identity, error) {
	for _, u := range c.URIs {
		if u.Scheme != identityScheme || u.Host != "tenant" {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
		if len(parts) != 3 || parts[1] != "site" {
			return Identity{}, fmt.Errorf("%w: malformed identity URI %q", ErrNoIdentity, u.String())
		}
		tenant, err1 := url.PathUnescape(parts[0])
		site, err2 := url.PathUnescape(parts[2])
		if err1 != nil || err2 != nil || tenant == "" || site == "" {
			return Identity{}, fmt.Errorf("%w: malformed identity URI %q", ErrNoIdentity, u.String())
		}
		return Identity{Tenant: tenant, Site: site}, nil
	}
	return Identity{}, ErrNoIdentity
}

// Fingerprint is the form in which n-kudo prints a certificate for pinning:
// "sha256:" followed by the lowercase hex SHA-256 of its DER encoding.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// SerialString is the canonical text form of a certificate serial (lowercase hex),
// as stored for revocation checks.
func SerialString(serial *big.Int) string { return serial.Text(16) }

// ParseSerial is the inverse of SerialString.
func ParseSerial(s string) (*big.Int, error) {
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		return nil, fmt.Errorf("parse serial %q: not hexadecimal", s)
	}
	return n, nil
}

// NewKey generates an ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// NewCSR builds a PEM certificate request for key. The CA ignores every
// name in it and issues the identity bound to the enrollment token or the
// current certificate; the CN is set only to make the request readable.
func NewCSR(key *ecdsa.PrivateKey, commonName string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCSR decodes and checks a PEM certificate request: its signature must
// verify and its key must be ECDSA P-256. Errors wrap ErrBadCSR.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: no PEM \"CERTIFICATE REQUEST\" block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: key must be ECDSA P-256", ErrBadCSR)
	}
	return csr, nil
}

// EncodeCertPEM encodes DER certificate bytes as PEM.
func EncodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// EncodeKeyPEM encodes an ECDSA private key as a PEM "EC PRIVATE KEY" block.
func EncodeKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// ParseCertPEM decodes every CERTIFICATE block in data; it fails if there is none.
func ParseCertPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM \"CERTIFICATE\" block found")
	}
	return certs, nil
}

// ParseKeyPEM decodes an ECDSA private key from PEM (SEC 1 or PKCS #8).
func ParseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key block found")
		}
		switch block.Type {
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse EC key: %w", err)
			}
			return k, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse PKCS #8 key: %w", err)
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("key is %T, want ECDSA", k)
			}
			return ek, nil
		}
	}
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// newCA creates a self-signed CA certificate valid for ten years.
func newCA(now time.Time, name string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"n-kudo"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return cert, key, nil
}

// newServerCert issues a TLS server certificate for hosts (DNS names or IPs), valid for one year.
func newServerCert(ca *x509.Certificate, caKey crypto.Signer, hosts []string, now time.Time) (tls.Certificate, []byte, []byte, error) {
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "n-kudo control plane", Organization: []string{"n-kudo"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("create server certificate: %w", err)
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	certPEM := EncodeCertPEM(der)
	tc, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("load server key pair: %w", err)
	}
	return tc, certPEM, keyPEM, nil
}

// defaultServerHosts are the names a generated server certificate always covers.
var defaultServerHosts = []string{"localhost", "127.0.0.1", "::1"}

// DefaultServerHosts returns the names a generated server certificate covers
// besides the configured ones.
func DefaultServerHosts() []string { return append([]string(nil), defaultServerHosts...) }
