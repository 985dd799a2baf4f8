package main

import (
	"context"
	"fmt"
)

// LoginCmd checks a control plane and token and saves them to the config file.
type LoginCmd struct {
	Server string `arg:"" optional:"" placeholder:"URL" help:"Control-plane URL (default: --server or NKUDO_SERVER)."`
	Tenant string `placeholder:"TENANT" help:"Tenant an admin token acts on."`
}

// Help is the long help text.
func (c *LoginCmd) Help() string {
	return `Checks that the control plane answers and accepts the token (--token or
NKUDO_TOKEN), verifying its certificate with --ca-file or --ca-hash, then
writes server, token and CA settings to the config file
($NKUDO_CONFIG, default ~/.config/nkudo/config.json, mode 0600). Later
commands read it; flags and environment variables override it.`
}

// Run verifies and saves.
func (c *LoginCmd) Run(ctx context.Context, g *Globals, s *Streams) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	for _, kv := range []struct {
		dst *string
		v   string
	}{
		{&cfg.Server, g.Server}, {&cfg.Server, c.Server}, {&cfg.Token, g.Token},
		{&cfg.CAFile, g.CAFile}, {&cfg.CAHash, g.CAHash}, {&cfg.Tenant, c.Tenant},
	} {
		if kv.v != "" {
			*kv.dst = kv.v
		}
	}
	if cfg.Server == "" {
		return fmt.Errorf("no control plane: nkudoctl login URL")
	}
	if cfg.Token == "" {
		return fmt.Errorf("no token: pass --token or set NKUDO_TOKEN")
	}
	client, err := newClient(cfg)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	sites, err := client.ListSites(ctx)
	if err != nil {
		return fmt.Errorf("login to %s: %w", cfg.Server, err)
	}
	p, err := saveConfig(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(s.Out, "logged in to %s (%d sites visible); settings saved to %s\n", cfg.Server, len(sites), p)
	return nil
}
