package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/nkudo/nkudo/agent/internal/atomicfile"
)

// siteKeyFile holds the site's age X25519 identity (0600). It never leaves
// the host: the control plane only learns the recipient, so it can store and
// ship secrets encrypted to the site without being able to read them.
const siteKeyFile = "site.agekey"

// loadOrCreateSiteKey reads the age identity in dir, creating it when it is
// missing (at enrollment, and on the first start of an agent enrolled before
// site keys existed).
func loadOrCreateSiteKey(dir string) (*age.X25519Identity, error) {
	p := filepath.Join(dir, siteKeyFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		k, err := age.GenerateX25519Identity()
		if err != nil {
			return nil, fmt.Errorf("generate site key: %w", err)
		}
		if err := atomicfile.Write(p, []byte(k.String()+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("store site key: %w", err)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read site key: %w", err)
	}
	k, err := age.ParseX25519Identity(strings.TrimSpace(string(b)))
	if err != nil {
		// The parse error would quote the key; say only where it is.
		return nil, fmt.Errorf("%s: not an age X25519 identity", p)
	}
	return k, nil
}

// SiteRecipient is the public half of the site's age key ("age1…"), which
// the agent reports so that secrets can be encrypted to this site only.
func (id *Identity) SiteRecipient() string { return id.siteKey.Recipient().String() }

// SiteKey is the site's age identity, for decrypting secrets addressed to
// it. It must never be logged or sent anywhere.
func (id *Identity) SiteKey() *age.X25519Identity { return id.siteKey }
