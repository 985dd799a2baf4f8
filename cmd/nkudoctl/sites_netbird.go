package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"unicode"

	"github.com/nkudo/nkudo/api"
)

// maxSetupKey bounds what is read as a setup key: NetBird's are UUIDs, so
// anything near this size is the wrong file.
const maxSetupKey = 1024

// SitesNetBirdCmd sets a site's NetBird setup key and management URL.
type SitesNetBirdCmd struct {
	Site          string `arg:"" help:"Site name."`
	SetupKeyFile  string `name:"setup-key-file" placeholder:"FILE" xor:"key" help:"Read the setup key from FILE; - reads standard input."`
	SetupKeyStdin bool   `name:"setup-key-stdin" xor:"key" help:"Read the setup key from standard input."`
	Clear         bool   `xor:"key" help:"Remove the site's setup key."`
	ManagementURL string `name:"management-url" required:"" placeholder:"URL" help:"NetBird management URL (http or https)."`

	// A key given as a flag is refused without being echoed (kong's
	// "unknown flag" error would print --setup-key=KEY whole).
	SetupKey string `name:"setup-key" hidden:""`
}

// Help is the long help text.
func (c *SitesNetBirdCmd) Help() string {
	return `Stores SITE's NetBird setup key and management URL on the control plane.
The agent picks them up at its next certificate renewal and runs
"netbird up" with them when it next starts.

The key is read from --setup-key-file FILE (- for standard input, like
--setup-key-stdin) or --setup-key-stdin (surrounding
whitespace is ignored), never from the command line, where it would land in
shell history and the process list; nkudoctl never prints it. --clear
removes the key. Example:

  nkudoctl sites netbird store-042 --management-url https://netbird.example.com:443 \
    --setup-key-file /run/secrets/store-042.setupkey`
}

// Run reads the key and sends it.
func (c *SitesNetBirdCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	if c.SetupKey != "" {
		return errors.New("a setup key on the command line lands in shell history and the process list: " +
			"pass --setup-key-file FILE or --setup-key-stdin (and consider replacing a key that was typed there)")
	}
	if !c.Clear && c.SetupKeyFile == "" && !c.SetupKeyStdin {
		return errors.New("no setup key: pass --setup-key-file FILE, --setup-key-stdin, or --clear")
	}
	if u, err := url.Parse(c.ManagementURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("--management-url %q: want an http(s) URL such as https://netbird.example.com:443", c.ManagementURL)
	}
	var key string
	if !c.Clear {
		var err error
		if key, err = c.readKey(s); err != nil {
			return err
		}
	}
	if err := client.SetNetBird(ctx, c.Site, api.SetNetBirdRequest{ManagementURL: c.ManagementURL, SetupKey: key}); err != nil {
		return fmt.Errorf("set NetBird for site %s: %w", c.Site, err)
	}
	if c.Clear {
		fmt.Fprintf(s.Out, "NetBird setup key cleared for site %s (management %s)\n", c.Site, c.ManagementURL)
		return nil
	}
	fmt.Fprintf(s.Out, "NetBird setup key stored for site %s (management %s); the agent stores it at its next certificate renewal and joins when it next starts\n",
		c.Site, c.ManagementURL)
	return nil
}

// readKey reads the setup key from the file or stdin. Its errors name the
// source and never quote the content.
func (c *SitesNetBirdCmd) readKey(s *Streams) (string, error) {
	var (
		r    io.Reader
		from string
	)
	if c.SetupKeyStdin || c.SetupKeyFile == "-" {
		if s.In == nil {
			return "", errors.New("setup key: no standard input to read")
		}
		r, from = s.In, "standard input"
	} else {
		f, err := os.Open(c.SetupKeyFile)
		if err != nil {
			return "", fmt.Errorf("setup key: %w", err)
		}
		defer f.Close()
		r, from = f, c.SetupKeyFile
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSetupKey+1))
	if err != nil {
		return "", fmt.Errorf("read setup key from %s: %w", from, err)
	}
	if len(b) > maxSetupKey {
		return "", fmt.Errorf("setup key from %s: longer than %d bytes; is it the right file?", from, maxSetupKey)
	}
	key := strings.TrimSpace(string(b))
	switch {
	case key == "":
		return "", fmt.Errorf("setup key from %s is empty (to remove the key, pass --clear)", from)
	case strings.IndexFunc(key, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return "", fmt.Errorf("setup key from %s holds spaces, line breaks or control characters; want the key alone", from)
	}
	return key, nil
}
