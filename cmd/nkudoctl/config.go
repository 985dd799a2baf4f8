package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/nkudo/nkudo/api"
)

// clientConfig is the file `nkudoctl login` writes: where the control plane
// is and how to reach it. Flags and environment override it.
type clientConfig struct {
	Server string `json:"server"`
	Token  string `json:"token,omitempty"`
	// CAFile is a PEM bundle that verifies the server; CAHash pins its CA
	// ("sha256:<hex>", as printed with enrollment tokens). Neither: system roots.
	CAFile string `json:"caFile,omitempty"`
	CAHash string `json:"caHash,omitempty"`
	// Tenant is the tenant an admin token acts on.
	Tenant string `json:"tenant,omitempty"`
}

// configPath is $NKUDO_CONFIG, else <user config dir>/nkudo/config.json.
func configPath() (string, error) {
	if p := os.Getenv("NKUDO_CONFIG"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("config file: %w (set NKUDO_CONFIG)", err)
	}
	return filepath.Join(dir, "nkudo", "config.json"), nil
}

// loadConfig reads the config file; a missing file is an empty config, a
// key it does not know an error.
func loadConfig() (clientConfig, error) {
	var c clientConfig
	p, err := configPath()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return clientConfig{}, fmt.Errorf("config %s: %w", p, err)
	}
	return c, nil
}

// configResolver gives kong the config file's values: a flag that is
// neither on the command line nor set in its environment variable takes
// the file's value, so flags win over the environment, which wins over
// the file.
func configResolver(c clientConfig) kong.Resolver {
	values := map[string]string{"server": c.Server, "token": c.Token, "ca-file": c.CAFile, "ca-hash": c.CAHash}
	return kong.ResolverFunc(func(_ *kong.Context, _ *kong.Path, f *kong.Flag) (any, error) {
		v := values[f.Name]
		if v == "" {
			return nil, nil
		}
		for _, e := range f.Envs {
			if os.Getenv(e) != "" {
				return nil, nil
			}
		}
		return v, nil
	})
}

func saveConfig(c clientConfig) (string, error) {
	p, err := configPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	tmp := p + ".tmp"
	// 0600: the file holds a bearer token.
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	return p, nil
}

// resolve is the connection settings: flags, environment and the config
// file, merged by kong (configResolver), and the tenant (NKUDO_TENANT over
// the file's).
func resolve(g *Globals) (clientConfig, error) {
	if g.configErr != nil {
		return clientConfig{}, g.configErr
	}
	c := clientConfig{Server: g.Server, Token: g.Token, CAFile: g.CAFile, CAHash: g.CAHash, Tenant: g.configTenant}
	if v := os.Getenv("NKUDO_TENANT"); v != "" {
		c.Tenant = v
	}
	if c.Server == "" {
		return c, errors.New("no control plane: pass --server, set NKUDO_SERVER, or run nkudoctl login")
	}
	return c, nil
}

func newClient(c clientConfig) (*api.Client, error) {
	cfg := api.ClientConfig{BaseURL: c.Server, Token: c.Token, Tenant: c.Tenant, CAFingerprint: c.CAHash}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	return api.NewClient(cfg)
}

// connect builds an API client from flags, environment and the config file.
func connect(g *Globals) (*api.Client, error) {
	c, err := resolve(g)
	if err != nil {
		return nil, err
	}
	return newClient(c)
}

// pickRepo finds the repository named by ID or name, or the tenant's only one.
func pickRepo(ctx context.Context, c *api.Client, want string) (api.Repository, error) {
	repos, err := c.ListRepos(ctx)
	if err != nil {
		return api.Repository{}, fmt.Errorf("list repositories: %w", err)
	}
	if want == "" {
		switch len(repos) {
		case 0:
			return api.Repository{}, errors.New("the tenant has no repository")
		case 1:
			return repos[0], nil
		}
		names := make([]string, len(repos))
		for i, r := range repos {
			names[i] = r.Name
		}
		return api.Repository{}, fmt.Errorf("several repositories (%s): pass --repo", strings.Join(names, ", "))
	}
	for _, r := range repos {
		if r.ID == want || r.Name == want {
			return r, nil
		}
	}
	return api.Repository{}, fmt.Errorf("no repository %q", want)
}

// writeJSON prints v indented, for --output json. The output is not HTML:
// <, > and & are printed as they are.
func writeJSON(s *Streams, v any) error {
	enc := json.NewEncoder(s.Out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
