package store

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

// HashSecret is how every token secret is stored and looked up: lower-case
// hex SHA-256. Secrets are 256-bit random values, so a fast hash is enough.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// EqualHash compares two hashes in constant time.
func EqualHash(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// NewSecret returns a 256-bit random secret as 64 hex characters.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// NewID returns a 128-bit random identifier as 32 hex characters.
func NewID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// NewEnrollmentToken returns a fresh one-time token "id.secret" with its
// halves. Store id with HashSecret(secret); hand token to the operator.
func NewEnrollmentToken() (id, secret, token string, err error) {
	id, err = NewID()
	if err != nil {
		return "", "", "", err
	}
	secret, err = NewSecret()
	if err != nil {
		return "", "", "", err
	}
	return id, secret, id + "." + secret, nil
}

// ParseEnrollmentToken splits "id.secret". ErrInvalid if the shape is wrong.
func ParseEnrollmentToken(token string) (id, secret string, err error) {
	id, secret, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok || id == "" || secret == "" || strings.Contains(secret, ".") {
		return "", "", fmt.Errorf("parse enrollment token: want id.secret: %w", ErrInvalid)
	}
	return id, secret, nil
}

// ValidName reports whether s is a DNS label (a-z, 0-9, '-', 1–63
// characters, no leading or trailing '-'): the rule for tenant IDs and site names.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Gaps returns the sequence numbers missing from lines (sorted by Seq, as
// Logs returns them) after afterSeq, as closed ranges [from, to].
func Gaps(lines []LogLine, afterSeq int64) [][2]int64 {
	var gaps [][2]int64
	next := afterSeq + 1
	for _, l := range lines {
		if l.Seq > next {
			gaps = append(gaps, [2]int64{next, l.Seq - 1})
		}
		if l.Seq >= next {
			next = l.Seq + 1
		}
	}
	return gaps
}
