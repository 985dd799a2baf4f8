package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// SecretsCmd groups the secret commands.
type SecretsCmd struct {
	Encrypt SecretsEncryptCmd `cmd:"" help:"Encrypt a file or stdin to the age recipients of one or more sites (plus optional team recipients) and print the ASCII-armoured ciphertext (for spec.cloudInit.userDataEncrypted or a files[].contentEncrypted)."`
}

// maxSecretPlain bounds the value secrets encrypt reads: the armoured
// result is committed into a Site document and written to the seed disk,
// so a value this large is a mistake, not a secret.
const maxSecretPlain = 1 << 20

// SecretsEncryptCmd encrypts a value to the keys of one or more sites,
// and optionally to team recipients who keep a way to recover it.
type SecretsEncryptCmd struct {
	Site           []string `required:"" help:"Site whose agent can decrypt the value; repeat for several sites."`
	Recipient      []string `help:"Extra age recipient (age1…) that can also decrypt, e.g. a team key for recovery; repeatable."`
	RecipientsFile string   `help:"File of extra age recipients, one per line (# comments allowed), as age -R reads."`
	File           string   `short:"f" default:"-" help:"File to encrypt; - (the default) reads stdin."`
}

// Run encrypts the value. The plaintext goes from the file straight into
// the encrypter; only the site's public recipient is fetched from the API.
// The input is read and checked before connecting: a secret too large to
// encrypt is refused without a control plane.
func (c *SecretsEncryptCmd) Run(ctx context.Context, g *Globals, s *Streams) error {
	var in io.Reader
	if c.File == "-" {
		if s.In == nil {
			return errors.New("secrets encrypt: no stdin; give --file")
		}
		in = s.In
	} else {
		f, err := os.Open(c.File)
		if err != nil {
			return fmt.Errorf("secrets encrypt: read %s: %w", c.File, err)
		}
		defer f.Close()
		in = f
	}
	plain, err := io.ReadAll(io.LimitReader(in, maxSecretPlain+1))
	if err != nil {
		return fmt.Errorf("secrets encrypt: read %s: %w", c.File, err)
	}
	if len(plain) > maxSecretPlain {
		return fmt.Errorf("secrets encrypt: %s is larger than %d bytes", c.File, maxSecretPlain)
	}
	recipients, err := c.teamRecipients()
	if err != nil {
		return err
	}
	client, err := connect(g)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	for _, site := range c.Site {
		st, err := client.GetSite(ctx, site)
		if err != nil {
			return fmt.Errorf("get site %s: %w", site, err)
		}
		if st.Facts == nil || st.Facts.AgeRecipient == "" {
			return fmt.Errorf("site %s has not reported an age recipient yet (start or upgrade its agent)", site)
		}
		r, err := age.ParseX25519Recipient(st.Facts.AgeRecipient)
		if err != nil {
			return fmt.Errorf("site %s: age recipient %q: %w", site, st.Facts.AgeRecipient, err)
		}
		recipients = append(recipients, r)
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	ew, err := age.Encrypt(aw, recipients...)
	if err != nil {
		return fmt.Errorf("secrets encrypt: %w", err)
	}
	if _, err := ew.Write(plain); err != nil {
		return fmt.Errorf("secrets encrypt: %w", err)
	}
	if err := ew.Close(); err != nil {
		return fmt.Errorf("secrets encrypt: %w", err)
	}
	if err := aw.Close(); err != nil {
		return fmt.Errorf("secrets encrypt: %w", err)
	}
	_, err = s.Out.Write(buf.Bytes())
	return err
}

// teamRecipients parses --recipient and --recipients-file. They are read
// before any site is fetched so a typo fails without a network round trip.
func (c *SecretsEncryptCmd) teamRecipients() ([]age.Recipient, error) {
	var out []age.Recipient
	for _, s := range c.Recipient {
		r, err := age.ParseX25519Recipient(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--recipient %q: %w", s, err)
		}
		out = append(out, r)
	}
	if c.RecipientsFile == "" {
		return out, nil
	}
	f, err := os.Open(c.RecipientsFile)
	if err != nil {
		return nil, fmt.Errorf("--recipients-file: %w", err)
	}
	defer f.Close()
	rs, err := age.ParseRecipients(f)
	if err != nil {
		return nil, fmt.Errorf("--recipients-file %s: %w", c.RecipientsFile, err)
	}
	return append(out, rs...), nil
}
