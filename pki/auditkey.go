package pki

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// AuditKeyFile is the name of the audit chain key in a PKI directory: it
// sits beside the CA, never in the database, so whoever can write the
// database but not read this directory cannot re-chain the audit log.
const AuditKeyFile = "audit.key"

// AuditKey is the audit chain's HMAC key as loaded from its file.
type AuditKey struct {
	// Key is the 32-byte secret. Hand it straight to the store (as
	// store.AuditKey, which does not print).
	Key []byte
	// Fresh says the key was made by this load (or by one that did not
	// get to Commit): the store may key a chain that has unkeyed events.
	Fresh bool
	path  string
}

// LoadAuditKey reads the audit key at path (64 hex characters). When the
// file does not exist and create is set, it makes a new key and writes it
// to path+".new", reported Fresh; Commit renames it into place once the
// store has keyed the chain with it, so a crash in between leaves a key
// that is still fresh at the next start rather than one that looks as if
// it had keyed the chain already. Without create a missing key is
// (AuditKey{}, nil): the store runs unkeyed and refuses to extend a keyed
// chain.
func LoadAuditKey(path string, create bool) (AuditKey, error) {
	if data, err := os.ReadFile(path); err == nil {
		k, err := parseAuditKey(data, path)
		return AuditKey{Key: k, path: path}, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return AuditKey{}, fmt.Errorf("read audit key: %w", err)
	}
	pending := path + ".new"
	if data, err := os.ReadFile(pending); err == nil {
		k, err := parseAuditKey(data, pending)
		return AuditKey{Key: k, Fresh: true, path: path}, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return AuditKey{}, fmt.Errorf("read audit key: %w", err)
	}
	if !create {
		return AuditKey{}, nil
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return AuditKey{}, fmt.Errorf("generate audit key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return AuditKey{}, fmt.Errorf("create audit key directory: %w", err)
	}
	if err := writeFiles(map[string][]byte{pending: []byte(hex.EncodeToString(k) + "\n")}); err != nil {
		return AuditKey{}, fmt.Errorf("write audit key (set AUDIT_KEY_FILE to a writable path beside the CA): %w", err)
	}
	return AuditKey{Key: k, Fresh: true, path: path}, nil
}

// Commit moves a fresh key into place; a no-op for a key that was not fresh.
func (k AuditKey) Commit() error {
	if !k.Fresh {
		return nil
	}
	if err := os.Rename(k.path+".new", k.path); err != nil {
		return fmt.Errorf("commit audit key: %w", err)
	}
	return nil
}

func parseAuditKey(data []byte, path string) ([]byte, error) {
	k, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(k) < 32 {
		return nil, fmt.Errorf("audit key %s: want at least 64 hex characters", path)
	}
	return k, nil
}

// NewAuditKeyFile writes a new audit key to path, refusing to overwrite
// one (`nkudo pki init` makes it with the CA).
func NewAuditKeyFile(path string) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s already exists: refusing to overwrite", path)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return fmt.Errorf("generate audit key: %w", err)
	}
	return writeFiles(map[string][]byte{path: []byte(hex.EncodeToString(k) + "\n")})
}
