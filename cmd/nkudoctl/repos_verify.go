package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/nkudo/nkudo/api"
)

// VerifyFlags set a repository's commit signature policy (repos set).
// Each flag replaces its part of the current policy; the rest stays.
type VerifyFlags struct {
	VerifySSH  *string `name:"verify-ssh" placeholder:"FILE" help:"Trust the SSH keys of this allowed_signers file (git's gpg.ssh.allowedSignersFile format; '' = none)."`
	VerifyGPG  *string `name:"verify-gpg" placeholder:"FILE" help:"Trust the OpenPGP public keys of this armoured file ('' = none)."`
	VerifyMode *string `name:"verify-mode" placeholder:"MODE" help:"head: the commit reconciled must be signed by a trusted key; all: every commit since the last applied one too; off: verify nothing (default with keys: head)."`
}

func (f VerifyFlags) given() bool {
	return f.VerifySSH != nil || f.VerifyGPG != nil || f.VerifyMode != nil
}

// policy merges the flags into the current policy (nil: no change).
func (f VerifyFlags) policy(cur *api.VerifyPolicy) (*api.VerifyPolicy, error) {
	if !f.given() {
		return nil, nil
	}
	p := api.VerifyPolicy{}
	if cur != nil {
		p = *cur
	}
	read := func(flag string, file *string, dst *string) error {
		if file == nil {
			return nil
		}
		if *file == "" {
			*dst = ""
			return nil
		}
		b, err := os.ReadFile(*file)
		if err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
		if strings.TrimSpace(string(b)) == "" {
			return fmt.Errorf("%s: %s holds no key", flag, *file)
		}
		*dst = string(b)
		return nil
	}
	if err := read("--verify-ssh", f.VerifySSH, &p.AllowedSigners); err != nil {
		return nil, err
	}
	if err := read("--verify-gpg", f.VerifyGPG, &p.GPGKeys); err != nil {
		return nil, err
	}
	switch {
	case f.VerifyMode == nil:
		if p.Mode == "" {
			p.Mode = api.VerifyHead
		}
	case *f.VerifyMode == "off":
		return &api.VerifyPolicy{}, nil
	case *f.VerifyMode == api.VerifyHead || *f.VerifyMode == api.VerifyAll:
		p.Mode = *f.VerifyMode
	default:
		return nil, fmt.Errorf("--verify-mode %q: want head, all or off", *f.VerifyMode)
	}
	if p.AllowedSigners == "" && p.GPGKeys == "" {
		return &api.VerifyPolicy{}, nil // no key left: nothing to verify with
	}
	return &p, nil
}

// verifySummary is the "Verify commits" line of repos show.
func verifySummary(p *api.VerifyPolicy) string {
	if p == nil {
		return "no"
	}
	var keys []string
	if n := countSigners(p.AllowedSigners); n > 0 {
		keys = append(keys, fmt.Sprintf("%d SSH", n))
	}
	if n := strings.Count(p.GPGKeys, "-----BEGIN PGP PUBLIC KEY BLOCK-----"); n > 0 {
		keys = append(keys, fmt.Sprintf("%d OpenPGP key block(s)", n))
	}
	return p.Mode + " (" + strings.Join(keys, ", ") + ")"
}

func countSigners(text string) int {
	n := 0
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			n++
		}
	}
	return n
}
