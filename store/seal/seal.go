// Package seal owns the server's secret key and the encryption of secrets
// at rest (credentials, webhook secrets, NetBird setup keys): AES-256-GCM
// from the standard library, with additional data that names the row a
// secret belongs to, so a sealed value copied to another row or tenant
// does not open. The key lives in a file, never in the database.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the length of a key in bytes (AES-256).
const KeySize = 32

// DefaultKeyFile is the key's file name in the data dir when no key file
// is configured.
const DefaultKeyFile = "secret.key"

// prefix marks a sealed value; a stored value without it is plain text
// from before sealing (converted when the store opens).
const prefix = "nkv1:"

// ErrWrongKey means a sealed value was sealed with another key.
var ErrWrongKey = errors.New("sealed with a different secret key")

// ErrOpen means a sealed value failed authentication: it was altered, or
// moved from the row it was sealed for.
var ErrOpen = errors.New("sealed value does not authenticate")

// Key is the server's secret key. It cannot print itself.
type Key struct {
	aead cipher.AEAD
	id   string // first 4 bytes of SHA-256(key), hex: names the key in errors
}

// NewKey returns a Key over raw, which must be KeySize bytes.
func NewKey(raw []byte) (*Key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("secret key: want %d bytes, got %d", KeySize, len(raw))
	}
	b, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	sum := sha256.Sum256(raw)
	return &Key{aead: aead, id: hex.EncodeToString(sum[:4])}, nil
}

// Generate returns a new random key and its file encoding.
func Generate() (*Key, []byte, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, nil, fmt.Errorf("generate secret key: %w", err)
	}
	k, err := NewKey(raw)
	if err != nil {
		return nil, nil, err
	}
	return k, []byte(base64.StdEncoding.EncodeToString(raw) + "\n"), nil
}

// ID names the key (a hash prefix, safe to show) so a mismatch can be told apart.
func (k *Key) ID() string { return k.id }

// String hides the key.
func (k *Key) String() string { return "seal.Key(" + k.id + ")" }

// GoString hides the key from %#v.
func (k *Key) GoString() string { return k.String() }

// Load reads a key file: 32 bytes, base64-encoded (standard or URL
// alphabet, optional padding and surrounding white space).
func Load(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secret key: %w", err)
	}
	s := strings.TrimSpace(string(b))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err := enc.DecodeString(s); err == nil && len(raw) == KeySize {
			return NewKey(raw)
		}
	}
	return nil, fmt.Errorf("secret key %s: want %d base64-encoded bytes (for example `head -c32 /dev/urandom | base64`)", path, KeySize)
}

// LoadOrCreate returns the key in file, or, when file is "", the key in
// dataDir/DefaultKeyFile, generating it (mode 0600) with a loud warning
// when it does not exist: a development convenience, like the dev PKI.
// A configured file that does not exist is an error, never generated.
func LoadOrCreate(file, dataDir string, log *slog.Logger) (*Key, error) {
	if file != "" {
		return Load(file)
	}
	if dataDir == "" {
		return nil, errors.New("secret key: no key file configured and no data dir to keep one in")
	}
	p := filepath.Join(dataDir, DefaultKeyFile)
	k, err := Load(p)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	k, enc, err := Generate()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return Load(p) // another process made it first
	}
	if err != nil {
		return nil, fmt.Errorf("create secret key: %w", err)
	}
	if _, err := f.Write(enc); err != nil {
		f.Close()
		return nil, fmt.Errorf("write secret key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write secret key: %w", err)
	}
	if log != nil {
		log.Warn("GENERATED A SECRET KEY IN THE DATA DIR: secrets at rest are only as safe as this file; for production set --secret-key-file (NKUDO_SECRET_KEY_FILE) to a key kept outside the data dir and the database, the same on every replica",
			"component", "seal", "file", p, "key", k.ID())
	}
	return k, nil
}

// IsSealed reports whether a stored value is sealed (not legacy plain text).
func IsSealed(stored string) bool { return strings.HasPrefix(stored, prefix) }

// Seal encrypts plaintext for the row named by ad and returns the stored
// form "nkv1:<key id>:<base64(nonce|ciphertext)>". "" stays "" (no secret).
func (k *Key) Seal(plaintext string, ad ...string) (string, error) {
	if plaintext == "" {
		return "", nil
	}
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	out := k.aead.Seal(nonce, nonce, []byte(plaintext), additional(ad))
	return prefix + k.id + ":" + base64.RawStdEncoding.EncodeToString(out), nil
}

// Open decrypts a value Seal returned for the same ad. "" gives "".
// ErrWrongKey if another key sealed it; ErrOpen if it was altered or
// belongs to another row.
func (k *Key) Open(stored string, ad ...string) (string, error) {
	if stored == "" {
		return "", nil
	}
	rest, ok := strings.CutPrefix(stored, prefix)
	if !ok {
		return "", errors.New("open sealed value: not sealed")
	}
	id, body, ok := strings.Cut(rest, ":")
	if !ok {
		return "", fmt.Errorf("open sealed value: %w", ErrOpen)
	}
	if id != k.id {
		return "", fmt.Errorf("open sealed value: key %s sealed it, this server has key %s (check --secret-key-file): %w", id, k.id, ErrWrongKey)
	}
	b, err := base64.RawStdEncoding.DecodeString(body)
	if err != nil || len(b) < k.aead.NonceSize() {
		return "", fmt.Errorf("open sealed value: %w", ErrOpen)
	}
	n := k.aead.NonceSize()
	pt, err := k.aead.Open(nil, b[:n], b[n:], additional(ad))
	if err != nil {
		return "", fmt.Errorf("open sealed value: %w", ErrOpen)
	}
	return string(pt), nil
}

// additional joins the row's names with NUL, which no name contains, so
// ("a", "bc") and ("ab", "c") differ.
func additional(ad []string) []byte { return []byte(strings.Join(ad, "\x00")) }
