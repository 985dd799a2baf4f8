package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// SecretsCmd groups the secret commands.
type SecretsCmd struct {
	Encrypt SecretsEncryptCmd `cmd:"" help:"Encrypt a file or stdin to a site's age recipient and print the ASCII-armoured ciphertext (for spec.cloudInit.userDataEncrypted)."`
}

// SecretsEncryptCmd encrypts a value to one site's key.
type SecretsEncryptCmd struct {
	Site string `required:"" help:"Site whose agent alone can decrypt the value."`
	File string `short:"f" default:"-" help:"File to encrypt; - (the default) reads stdin."`
}

// Run encrypts the value. The plaintext goes from the file straight into
// the encrypter; only the site's public recipient is fetched from the API.
func (c *SecretsEncryptCmd) Run(ctx context.Context, g *Globals, s *Streams) error {
	var plain []byte
	var err error
	if c.File == "-" {
		if s.In == nil {
			return errors.New("secrets encrypt: no stdin; give --file")
		}
		plain, err = io.ReadAll(s.In)
	} else {
		plain, err = os.ReadFile(c.File)
	}
	if err != nil {
		return fmt.Errorf("secrets encrypt: read %s: %w", c.File, err)
	}
	client, err := connect(g)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	st, err := client.GetSite(ctx, c.Site)
	if err != nil {
		return fmt.Errorf("get site %s: %w", c.Site, err)
	}
	if st.Facts == nil || st.Facts.AgeRecipient == "" {
		return fmt.Errorf("site %s has not reported an age recipient yet (start or upgrade its agent)", c.Site)
	}
	r, err := age.ParseX25519Recipient(st.Facts.AgeRecipient)
	if err != nil {
		return fmt.Errorf("site %s: age recipient %q: %w", c.Site, st.Facts.AgeRecipient, err)
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	ew, err := age.Encrypt(aw, r)
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
