// Package commitsig owns commit signature verification: it parses a
// repository's trusted keys (git's SSH allowed_signers text and armoured
// OpenPGP key rings) and checks a git commit's signature against them.
// SSH signatures are checked with github.com/hiddeco/sshsig, OpenPGP ones
// with github.com/ProtonMail/go-crypto (go-git's own choice); nothing here
// parses a signature by hand.
package commitsig

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// gitNamespace is the SSHSIG namespace git signs commits in.
const gitNamespace = "git"

// Keys is a parsed set of trusted keys.
type Keys struct {
	ssh []sshKey
	gpg openpgp.EntityList
}

type sshKey struct {
	principals string
	key        ssh.PublicKey
	namespaces []string // nil: any
}

// Parse reads trusted keys: allowedSigners in git's gpg.ssh.allowedSignersFile
// format, gpgKeys as armoured OpenPGP public keys. Either may be empty.
// Errors name the field (allowedSigners, gpgKeys) and the line.
func Parse(allowedSigners, gpgKeys string) (*Keys, error) {
	k := &Keys{}
	for i, line := range strings.Split(allowedSigners, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sk, err := parseAllowedSigner(line)
		if err != nil {
			return nil, fmt.Errorf("allowedSigners line %d: %w", i+1, err)
		}
		k.ssh = append(k.ssh, sk)
	}
	if strings.TrimSpace(gpgKeys) != "" {
		el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(gpgKeys))
		if err != nil {
			return nil, fmt.Errorf("gpgKeys: %w", err)
		}
		k.gpg = el
	}
	return k, nil
}

// parseAllowedSigner reads one "principals [options] keytype base64 [comment]"
// line; the options and key are authorized_keys syntax, which x/crypto/ssh parses.
func parseAllowedSigner(line string) (sshKey, error) {
	var principals, rest string
	if strings.HasPrefix(line, `"`) {
		end := strings.Index(line[1:], `"`)
		if end < 0 {
			return sshKey{}, errors.New("unterminated quoted principals")
		}
		principals, rest = line[1:end+1], line[end+2:]
	} else {
		f := strings.IndexAny(line, " \t")
		if f < 0 {
			return sshKey{}, errors.New("want principals and a public key")
		}
		principals, rest = line[:f], line[f:]
	}
	pub, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(strings.TrimSpace(rest)))
	if err != nil {
		return sshKey{}, fmt.Errorf("public key of %s: %w", principals, err)
	}
	sk := sshKey{principals: principals, key: pub}
	for _, o := range opts {
		name, val, _ := strings.Cut(o, "=")
		switch strings.ToLower(name) {
		case "namespaces":
			sk.namespaces = strings.Split(strings.Trim(val, `"`), ",")
		default:
			// cert-authority, valid-after and valid-before change who is
			// trusted; refusing them beats silently trusting more.
			return sshKey{}, fmt.Errorf("option %q is not supported", name)
		}
	}
	return sk, nil
}

func (s sshKey) allows(ns string) bool {
	if s.namespaces == nil {
		return true
	}
	for _, p := range s.namespaces {
		if ok, _ := path.Match(strings.TrimSpace(p), ns); ok {
			return true
		}
	}
	return false
}

// Signer is who verifiably signed a commit.
type Signer struct {
	// Kind is "ssh" or "openpgp".
	Kind string `json:"kind"`
	// Name is the allowed_signers principals or the key's first identity.
	Name string `json:"name"`
	// Key is the key's fingerprint (SHA256:… for SSH, hex for OpenPGP).
	Key string `json:"key"`
}

func (s Signer) String() string { return s.Kind + " " + s.Name + " " + s.Key }

// UnverifiedError says why a commit is not trusted.
type UnverifiedError struct {
	Commit string
	// Reason is "unsigned", "signed by <fingerprint>" or "bad signature by <fingerprint>".
	Reason string
}

func (e *UnverifiedError) Error() string {
	c := e.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	return fmt.Sprintf("commit %s is not signed by a trusted key (%s)", c, e.Reason)
}

// Verify checks c's signature against k. A commit that is not trusted
// returns an *UnverifiedError; other errors are I/O.
func (k *Keys) Verify(c *object.Commit) (Signer, error) {
	sig := strings.TrimSpace(c.PGPSignature)
	unverified := func(reason string) (Signer, error) {
		return Signer{}, &UnverifiedError{Commit: c.Hash.String(), Reason: reason}
	}
	if sig == "" {
		return unverified("unsigned")
	}
	payload, err := payload(c)
	if err != nil {
		return Signer{}, err
	}
	if strings.HasPrefix(sig, "-----BEGIN SSH SIGNATURE-----") {
		s, err := sshsig.Unarmor([]byte(sig))
		if err != nil {
			return unverified("unreadable SSH signature: " + err.Error())
		}
		fp := ssh.FingerprintSHA256(s.PublicKey)
		want := s.PublicKey.Marshal()
		for _, t := range k.ssh {
			if !bytes.Equal(t.key.Marshal(), want) || !t.allows(gitNamespace) {
				continue
			}
			if err := sshsig.Verify(bytes.NewReader(payload), s, t.key, s.HashAlgorithm, gitNamespace); err != nil {
				return unverified("bad signature by " + fp)
			}
			return Signer{Kind: "ssh", Name: t.principals, Key: fp}, nil
		}
		return unverified("signed by " + fp)
	}
	if len(k.gpg) > 0 {
		e, err := openpgp.CheckArmoredDetachedSignature(k.gpg, bytes.NewReader(payload), strings.NewReader(sig), nil)
		if err == nil {
			name := ""
			for id := range e.Identities {
				if name == "" || id < name {
					name = id
				}
			}
			return Signer{Kind: "openpgp", Name: name, Key: fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)}, nil
		}
		if !errors.Is(err, pgperrors.ErrUnknownIssuer) {
			return unverified("bad signature by " + pgpIssuer(sig))
		}
	}
	return unverified("signed by " + pgpIssuer(sig))
}

// pgpIssuer names the key an OpenPGP signature claims to be from.
func pgpIssuer(sig string) string {
	blk, err := armor.Decode(strings.NewReader(sig))
	if err != nil {
		return "an unreadable signature"
	}
	p, err := packet.Read(blk.Body)
	if err != nil {
		return "an unreadable signature"
	}
	s, ok := p.(*packet.Signature)
	if !ok {
		return "an unreadable signature"
	}
	if len(s.IssuerFingerprint) > 0 {
		return fmt.Sprintf("OpenPGP key %X", s.IssuerFingerprint)
	}
	if s.IssuerKeyId != nil {
		return fmt.Sprintf("OpenPGP key %016X", *s.IssuerKeyId)
	}
	return "an OpenPGP key without issuer"
}

// payload is the commit as signed: its object without the signature header.
func payload(c *object.Commit) ([]byte, error) {
	o := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(o); err != nil {
		return nil, fmt.Errorf("encode commit %s: %w", c.Hash, err)
	}
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(r); err != nil {
		return nil, fmt.Errorf("read commit %s: %w", c.Hash, err)
	}
	return b.Bytes(), nil
}
