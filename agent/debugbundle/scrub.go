package debugbundle

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Placeholders; neither contains a private-key marker, so a redacted file
// passes the final check.
const (
	redacted    = "[REDACTED]"
	redactedKey = "[REDACTED private key block]"
)

var (
	keyMarker = []byte("PRIVATE KEY")
	// A private-key PEM block, or its start when the end was cut off.
	pemKeyBlock = regexp.MustCompile(`(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)`)
	// The end of a block whose start was cut off (a log tail).
	pemKeyEnd = regexp.MustCompile(`(?s)\A.*-----END [A-Z0-9 ]*PRIVATE KEY-----`)
	// Fallback for an identity file that is not valid JSON.
	secretField = regexp.MustCompile(`(?i)"[a-z_]*(?:key|token|secret|passw(?:or)?d)"\s*:\s*"([^"]+)"`)
)

// minSecret is the shortest value redacted everywhere: shorter ones would
// shred unrelated text, and no real setup key, token or key line is that short.
const minSecret = 6

// secretName reports whether a JSON field name holds a secret: setupKey,
// token, apiToken, secret, password, ...
func secretName(name string) bool {
	n := strings.ToLower(name)
	for _, s := range []string{"key", "token", "secret", "password", "passwd", "credential"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// addSecret registers a value to redact wherever it appears.
func (b *bundle) addSecret(v []byte) {
	if len(bytes.TrimSpace(v)) < minSecret {
		return
	}
	for _, s := range b.secrets {
		if bytes.Equal(s, v) {
			return
		}
	}
	b.secrets = append(b.secrets, bytes.Clone(v))
	// Longest first: a whole key's base64 goes before its single lines.
	sort.SliceStable(b.secrets, func(i, j int) bool { return len(b.secrets[i]) > len(b.secrets[j]) })
}

// loadSecrets learns the values no file may carry: the configured extra
// secrets, every secret-named value of identity.json, and the bytes of
// every private key in the PKI dir (DER, base64 and each PEM line), so
// that a key copied somewhere it should not be is caught even without
// its PEM armour. The key files themselves are never written.
func (b *bundle) loadSecrets() {
	for _, s := range b.o.Secrets {
		b.addSecret([]byte(s))
	}
	if b.pki == nil {
		return
	}
	if fd, err := readFile(b.pki, "identity.json", 1<<20); err == nil {
		var doc any
		if json.Unmarshal(fd.data, &doc) == nil {
			redactJSON(doc, func(v string) { b.addSecret([]byte(v)) })
		} else {
			for _, m := range secretField.FindAllSubmatch(fd.data, -1) {
				b.addSecret(m[1])
			}
		}
	}
	dir, err := b.pki.Open(".")
	if err != nil {
		return
	}
	entries, _ := dir.ReadDir(-1)
	dir.Close()
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fd, err := readFile(b.pki, e.Name(), 1<<20)
		if err != nil || !bytes.Contains(fd.data, keyMarker) {
			continue
		}
		rest := fd.data
		for {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if !strings.Contains(blk.Type, "PRIVATE KEY") {
				continue
			}
			b.addSecret(blk.Bytes)
			enc := base64.StdEncoding.EncodeToString(blk.Bytes)
			b.addSecret([]byte(enc))
			for i := 0; i < len(enc); i += 64 {
				if line := enc[i:min(i+64, len(enc))]; len(line) >= 16 {
					b.addSecret([]byte(line))
				}
			}
		}
	}
}

// redactJSON replaces, in place, every non-empty string under a
// secret-named field of a decoded JSON document with [REDACTED], calling
// found with each original value.
func redactJSON(v any, found func(string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && s != "" && secretName(k) {
				found(s)
				x[k] = redacted
				continue
			}
			redactJSON(e, found)
		}
	case []any:
		for _, e := range x {
			redactJSON(e, found)
		}
	}
}

// scrub replaces secrets and private-key blocks in data. drop is non-empty
// when a private-key marker survives redaction: the file is then left out.
func scrub(data []byte, secrets [][]byte) (out []byte, n int, drop string) {
	out, n = redact(data, secrets)
	if bytes.Contains(out, keyMarker) {
		return nil, n, "holds a private-key marker outside a PEM block after redaction; dropped"
	}
	return out, n, ""
}

// redact replaces every secret and every private-key PEM block (whole, or
// cut off at either end) and counts the replacements.
func redact(data []byte, secrets [][]byte) (out []byte, n int) {
	out = data
	for _, s := range secrets {
		if c := bytes.Count(out, s); c > 0 {
			out = bytes.ReplaceAll(out, s, []byte(redacted))
			n += c
		}
	}
	if bytes.Contains(out, keyMarker) {
		out = pemKeyBlock.ReplaceAllFunc(out, func([]byte) []byte { n++; return []byte(redactedKey) })
		out = pemKeyEnd.ReplaceAllFunc(out, func([]byte) []byte { n++; return []byte(redactedKey) })
	}
	return out, n
}

// scrubText cleans text written into the manifest itself (error messages
// quoted as reasons): secrets replaced, key blocks removed, markers defused.
func (b *bundle) scrubText(s string) string {
	out, _ := redact([]byte(s), b.secrets)
	return strings.ReplaceAll(string(out), string(keyMarker), "private key")
}

// isKeyFile reports whether a PKI dir entry is key material by name.
func isKeyFile(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	// .agekey: the site's age identity, which decrypts the site's secrets.
	return ext == ".key" || ext == ".agekey" || strings.Contains(strings.ToLower(name), "private")
}
