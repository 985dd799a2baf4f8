package e2etest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
)

// Bootstrap creates tenant with `nkudo admin` (env names the data dir
// and database) and returns an API token for it named name.
func Bootstrap(t *testing.T, nkudo string, env []string, tenant, name string) string {
	t.Helper()
	Run(t, t.Context(), env, nkudo, "admin", "tenant", "create", tenant)
	out, err := RunErr(t.Context(), append(env, "NKUDO_LOG_LEVEL=error"), nkudo, "admin", "token", "create", "--tenant", tenant, "--name", name)
	if err != nil {
		t.Fatalf("nkudo admin token create: %v\n%s", err, out)
	}
	// stdout carries the token alone; stderr the note about it.
	token := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "nkudo_") {
			token = strings.TrimSpace(line)
		}
	}
	if token == "" {
		t.Fatalf("nkudo admin token create printed no token:\n%s", out)
	}
	return token
}

// FreeAddr returns a loopback address with a port free at the time of
// the call.
func FreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// WaitCA waits until `nkudo serve` (cp) has written its CA certificate to
// caPath and returns it as a pool; it fails at once if cp exits.
func WaitCA(t *testing.T, cp *Proc, caPath string, timeout time.Duration) *x509.CertPool {
	t.Helper()
	var pool *x509.CertPool
	Eventually(t, t.Context(), timeout, "nkudo serve writes its CA", func(context.Context) error {
		if done, err := cp.Exited(); done {
			t.Fatalf("nkudo serve exited: %v\n%s", err, Tail(cp.LogPath, 30))
		}
		b, err := os.ReadFile(caPath)
		if err != nil {
			return err
		}
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(b) {
			return fmt.Errorf("%s holds no certificate yet", caPath)
		}
		pool = p
		return nil
	})
	return pool
}

// Clients returns an API client for url with token and a plain HTTPS
// client, both trusting pool; their idle connections close when the test
// ends.
func Clients(t *testing.T, url, token string, pool *x509.CertPool) (*api.Client, *http.Client) {
	t.Helper()
	c, err := api.NewClient(api.ClientConfig{BaseURL: url, Token: token, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(c.CloseIdleConnections)
	t.Cleanup(tr.CloseIdleConnections)
	return c, &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// WaitReady waits until `nkudo serve` (cp) answers its readiness check;
// it fails at once if cp exits.
func WaitReady(t *testing.T, cp *Proc, c *api.Client, timeout time.Duration) {
	t.Helper()
	Eventually(t, t.Context(), timeout, "nkudo serve is ready", func(ctx context.Context) error {
		if done, err := cp.Exited(); done {
			t.Fatalf("nkudo serve exited: %v\n%s", err, Tail(cp.LogPath, 30))
		}
		return c.Health(ctx, true)
	})
}
